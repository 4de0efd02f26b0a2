"""``python -m bench.gpu_export``: a bundle's served network, for the GPU check (bench/gpu.sh).

The lent GPU machine has PyTorch and no TensorFlow, and nothing can be installed there. This
writes, into a git-ignored folder small enough to travel with the working tree:

    net.json       the cut backbone as a list of ops (a convolution with its batch norm
                   folded in and its ReLU, max and average pools, concatenation), the taps,
                   the input scaling and the bundle's identity
    net.npz        the folded convolution weights (float32; float16 when float32 would be over
                   WEIGHTS_BUDGET) and the brand heads (float32)
    reference.npz  fixed inputs (synthetic renders through detector.preprocess) and the
                   TensorFlow embeddings and scores for them
    jpegs/         the decode bound's JPEGs (bench.data.make_jpegs, as `python -m bench` uses)

`bench.torchnet` builds the same network in PyTorch from these. Why not ONNX: tf2onnx's
`from_keras` does not work with Keras 3 (onnx/tensorflow-onnx issues 2329, 2348, open), and
the Keras graph of Inception v3 is five kinds of layer, walked here in a few lines.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError

WEIGHTS_BUDGET = 40 << 20  # bytes of float32 weights above which they travel as float16
REFERENCE_IMAGES = 8
DECODE_JPEGS = 32


def _inputs(layer: Any) -> list[str]:
    return [t._keras_history.operation.name for t in layer._inbound_nodes[0].input_tensors]


def _pad(kind: str, padding: str, size: tuple[int, int], strides: tuple[int, int]) -> list[int]:
    if padding == "valid":
        return [0, 0]
    if strides == (1, 1) and all(k % 2 for k in size):
        return [(k - 1) // 2 for k in size]
    raise DetectorError(f"{kind}: padding 'same' with strides {strides} and size {size} is "
                        "asymmetric; the export handles symmetric padding only")


def graph(model: Any) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, str]]:
    """A Keras functional net → (ops in topological order, weights, Keras name → op name).

    Batch norm is folded into the convolution before it and ReLU becomes a flag on it; both
    need the convolution to feed nothing else."""
    consumers: dict[str, int] = {}
    for layer in model.layers:
        for name in _inputs(layer):
            consumers[name] = consumers.get(name, 0) + 1
    ops: dict[str, dict[str, Any]] = {}
    weights: dict[str, np.ndarray] = {}
    alias: dict[str, str] = {}
    for layer in model.layers:
        kind, cfg = type(layer).__name__, layer.get_config()
        if kind == "InputLayer":
            alias[layer.name] = "input"
            continue
        ins = [alias[n] for n in _inputs(layer)]
        where = f"layer {layer.name} ({kind})"
        if kind in ("BatchNormalization", "Activation"):
            conv = ops.get(ins[0])
            if conv is None or conv["op"] != "conv" or consumers[_inputs(layer)[0]] > 1:
                raise DetectorError(f"{where}: only supported right after a convolution")
            if kind == "BatchNormalization":
                if conv["relu"] or cfg["axis"] not in (-1, 3):
                    raise DetectorError(f"{where}: only over channels, before the ReLU")
                _fold(weights, conv["name"], layer, cfg)
            elif cfg["activation"] == "relu":
                conv["relu"] = True
            else:
                raise DetectorError(f"{where}: activation {cfg['activation']!r} not supported")
            alias[layer.name] = conv["name"]
            continue
        op: dict[str, Any] = {"name": layer.name, "inputs": ins}
        if kind == "Conv2D":
            if tuple(cfg["dilation_rate"]) != (1, 1) or cfg.get("groups", 1) != 1:
                raise DetectorError(f"{where}: dilated or grouped convolutions not supported")
            if cfg["activation"] not in ("linear", "relu"):
                raise DetectorError(f"{where}: activation {cfg['activation']!r} not supported")
            size, strides = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
            kernel = np.asarray(layer.kernel.numpy(), np.float32)  # (kh, kw, in, out)
            bias = (np.asarray(layer.bias.numpy(), np.float32) if cfg["use_bias"]
                    else np.zeros(kernel.shape[-1], np.float32))
            weights[f"{layer.name}.weight"] = kernel.transpose(3, 2, 0, 1).copy()
            weights[f"{layer.name}.bias"] = bias
            op.update(op="conv", channels=[int(kernel.shape[2]), int(kernel.shape[3])],
                      size=list(size), stride=list(strides),
                      pad=_pad(where, cfg["padding"], size, strides),
                      relu=cfg["activation"] == "relu")
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            size, strides = tuple(cfg["pool_size"]), tuple(cfg["strides"])
            op.update(op="maxpool" if kind == "MaxPooling2D" else "avgpool", size=list(size),
                      stride=list(strides), pad=_pad(where, cfg["padding"], size, strides))
        elif kind == "Concatenate":
            if cfg["axis"] not in (-1, 3):
                raise DetectorError(f"{where}: concatenation over axis {cfg['axis']}")
            op["op"] = "concat"
        else:
            raise DetectorError(f"{where}: layer type not supported by the export")
        ops[layer.name] = op
        alias[layer.name] = layer.name
    return list(ops.values()), weights, alias


def _fold(weights: dict[str, np.ndarray], conv: str, layer: Any, cfg: dict[str, Any]) -> None:
    values = {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), np.float64) for w in layer.weights}
    mean, var = values["moving_mean"], values["moving_variance"]
    gamma = values.get("gamma", np.ones_like(mean))
    beta = values.get("beta", np.zeros_like(mean))
    k = gamma / np.sqrt(var + cfg["epsilon"])
    w, b = weights[f"{conv}.weight"], weights[f"{conv}.bias"]
    weights[f"{conv}.weight"] = (w * k[:, None, None, None]).astype(np.float32)
    weights[f"{conv}.bias"] = ((b - mean) * k + beta).astype(np.float32)


def _reference_pixels(brands: list[str], size: int, n: int) -> np.ndarray:
    from detector.preprocess import prepare
    from detector.synth import render

    out = []
    for i in range(n):
        img, *_ = render(i, seed=17, brands=tuple(brands), logo_fraction=0.6, size=(640, 480))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(prepare(buf.getvalue(), size)[0].pixels)
    return np.stack(out)


def export(model_dir: Path, out: Path, *, images: int = REFERENCE_IMAGES,
           progress: Any = print) -> dict[str, Any]:
    """Write the export of bundle `model_dir` into `out`; returns net.json's content."""
    from bench.data import make_jpegs
    from detector.bundle import load_bundle
    from detector.model import BACKBONES, TOP

    # the reference is the float32 net whatever precision the bundle was trained in: the
    # device checks its float32 rebuild against it and reports bfloat16's distance from it
    bundle = load_bundle(model_dir, batch_size=images, precision="float32")
    backbone = bundle.backbone
    progress(f"export: walking the {backbone.name} graph cut at "
             f"{','.join(map(str, backbone.taps))}")
    ops, weights, alias = graph(backbone.model)
    total = sum(a.nbytes for a in weights.values())
    dtype = np.float16 if total > WEIGHTS_BUDGET else np.float32
    heads = bundle.heads
    arrays = {k: v.astype(dtype) for k, v in weights.items()}
    arrays.update({"head.mean": heads.mean, "head.scale": heads.scale,
                   "head.kernel": heads.kernel, "head.bias": heads.bias})
    meta = bundle.metadata
    net = {
        "format": 1,
        "bundle": {"path": str(model_dir), "version": bundle.version,
                   "backbone_id": meta["backbone_id"], "brands": bundle.brands,
                   "weights": meta["backbone"]["weights"],
                   "precision": meta["backbone"].get("precision", "float32")},
        "input_size": bundle.input_size,
        "scale": BACKBONES[backbone.name].scale,
        "taps": [{"op": alias[backbone.model.layers[-1].name if t.layer == TOP else t.layer],
                  "pool": t.pool} for t in backbone.taps],
        "weights_dtype": np.dtype(dtype).name,
        "ops": ops,
    }
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "net.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    (out / "net.json").write_text(json.dumps(net, indent=1) + "\n")
    progress(f"export: {len(ops)} ops, {sum(v.size for v in weights.values()):,} weights as "
             f"{net['weights_dtype']}; TensorFlow reference on {images} images")
    pixels = _reference_pixels(bundle.brands, bundle.input_size, images)
    embeddings = bundle.embed(pixels)
    np.savez(out / "reference.npz", pixels=pixels, embeddings=embeddings,
             scores=bundle.score(embeddings))
    progress(f"export: {DECODE_JPEGS} JPEGs for the decode bound")
    jpegs = out / "jpegs"
    jpegs.mkdir(exist_ok=True)
    for i, data in enumerate(make_jpegs(DECODE_JPEGS)):
        (jpegs / f"{i:02d}.jpg").write_bytes(data)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    progress(f"export: {out} holds {size / 2**20:.1f} MiB")
    return net


def main(argv: list[str] | None = None) -> int:
    from logowatch.cli import OneLineParser

    p = OneLineParser(prog="python -m bench.gpu_export", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="the model bundle to export")
    p.add_argument("--out", type=Path, default=Path("build/gpu-check"),
                   help="folder to write (default build/gpu-check, git-ignored)")
    p.add_argument("--images", type=int, default=REFERENCE_IMAGES,
                   help=f"reference images (default {REFERENCE_IMAGES})")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error("--images must be >= 1")
    try:
        export(args.model, args.out, images=args.images)
    except DetectorError as exc:
        print(f"gpu_export: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
