"""Reading a TF.js layers model (Keras topology, weights manifest, quantized shards) into numpy.

Pure functions, no TensorFlow: `detector.weights` uses them to move a TF.js net's weights onto a
`keras.applications` net, and the tests check them on tiny hand-made models. Layers are paired
by creation order (the number Keras appends to auto-generated names), never by list position:
Keras orders a functional model's layers by graph depth, and Keras 2 and Keras 3 break ties
differently inside Inception blocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.errors import DetectorError

_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16,
           "bool": np.bool_}
_QUANTIZED = {"uint8": np.uint8, "uint16": np.uint16}


@dataclass(frozen=True)
class WeightSpec:
    """One manifest entry and where its bytes lie in the concatenated shards."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int
    quant_dtype: str | None = None
    quant_min: float = 0.0
    quant_scale: float = 1.0


@dataclass(frozen=True)
class LayerSpec:
    """What must agree between two layers before one's weights may go into the other."""

    name: str
    kind: str
    config: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def parse_manifest(manifest: Sequence[dict[str, Any]]) -> list[WeightSpec]:
    """Flatten the manifest's groups into specs with byte offsets (groups and shards in order)."""
    specs: list[WeightSpec] = []
    offset = 0
    try:
        for group in manifest:
            for w in group["weights"]:
                shape = tuple(int(d) for d in w["shape"])
                q = w.get("quantization")
                if q is not None:
                    if q.get("dtype") not in _QUANTIZED or "min" not in q or "scale" not in q:
                        raise DetectorError(f"weight {w['name']}: unsupported quantization {q}")
                    stored = np.dtype(_QUANTIZED[q["dtype"]])
                elif w["dtype"] in _DTYPES:
                    stored = np.dtype(_DTYPES[w["dtype"]])
                else:
                    raise DetectorError(f"weight {w['name']}: unsupported dtype {w['dtype']}")
                nbytes = int(np.prod(shape, dtype=np.int64)) * stored.itemsize
                specs.append(WeightSpec(
                    name=w["name"], shape=shape, dtype=w["dtype"], offset=offset, nbytes=nbytes,
                    quant_dtype=q["dtype"] if q else None,
                    quant_min=float(q["min"]) if q else 0.0,
                    quant_scale=float(q["scale"]) if q else 1.0,
                ))
                offset += nbytes
    except (KeyError, TypeError, ValueError) as exc:
        raise DetectorError(f"weights manifest is not in the TF.js format: {exc!r}") from exc
    return specs


def dequantize(q: np.ndarray, minimum: float, scale: float) -> np.ndarray:
    """value = min + scale * q, computed as TF.js does (in doubles, then stored as float32)."""
    return (q.astype(np.float64) * scale + minimum).astype(np.float32)


def read_weights(manifest: Sequence[dict[str, Any]], blob: bytes) -> dict[str, np.ndarray]:
    """All weights by manifest name, dequantized to float32 where quantized."""
    specs = parse_manifest(manifest)
    expected = sum(s.nbytes for s in specs)
    if expected != len(blob):
        raise DetectorError(f"weight shards hold {len(blob)} bytes, the manifest wants {expected}")
    out: dict[str, np.ndarray] = {}
    for s in specs:
        if s.name in out:
            raise DetectorError(f"weight {s.name} appears twice in the manifest")
        stored = _QUANTIZED[s.quant_dtype] if s.quant_dtype else _DTYPES[s.dtype]
        raw = np.frombuffer(blob, dtype=np.dtype(stored).newbyteorder("<"),
                            count=int(np.prod(s.shape, dtype=np.int64)), offset=s.offset)
        if s.quant_dtype:
            out[s.name] = dequantize(raw, s.quant_min, s.quant_scale).reshape(s.shape)
        else:
            out[s.name] = raw.astype(stored).reshape(s.shape)
    return out


def topology_layers(topology: dict[str, Any]) -> list[dict[str, Any]]:
    """The layer records of a Keras 2 functional model's JSON topology, in its list order."""
    try:
        layers = topology["model_config"]["config"]["layers"]
    except (KeyError, TypeError) as exc:
        raise DetectorError("model topology has no model_config.config.layers") from exc
    if not isinstance(layers, list) or not layers:
        raise DetectorError("model topology lists no layers")
    return layers


def creation_index(name: str, base: str) -> int:
    """Keras' auto-name counter: 'conv2d' → 0, 'conv2d_7' → 7; anything else is refused."""
    m = re.fullmatch(re.escape(base) + r"(?:_(\d+))?", name)
    if m is None:
        raise DetectorError(f"layer {name!r} is not an auto-named {base!r} layer")
    return int(m.group(1) or 0)


def in_creation_order(layers: Iterable[LayerSpec], base: str) -> list[LayerSpec]:
    return sorted(layers, key=lambda spec: creation_index(spec.name, base))


def frozen_layers(topology: dict[str, Any]) -> list[str]:
    """Names of the layers the topology marks `trainable: false`, in list order."""
    return [layer["name"] for layer in topology_layers(topology)
            if layer.get("config", {}).get("trainable") is False]


def frozen_through(topology: dict[str, Any], class_name: str = "Conv2D") -> str | None:
    """The last frozen layer of `class_name` in list order (None when none is frozen)."""
    frozen = set(frozen_layers(topology))
    last = None
    for layer in topology_layers(topology):
        if layer["class_name"] == class_name and layer["name"] in frozen:
            last = layer["name"]
    return last


def pair_layers(source: Sequence[LayerSpec], target: Sequence[LayerSpec],
                base: str) -> list[tuple[LayerSpec, LayerSpec]]:
    """Pair two sets of `base` layers by creation order; every config and shape must agree."""
    if len(source) != len(target):
        raise DetectorError(f"{len(source)} {base} layers to import, the Keras net has "
                            f"{len(target)}")
    pairs = list(zip(in_creation_order(source, base), in_creation_order(target, base),
                     strict=True))
    for src, dst in pairs:
        if src.config != dst.config:
            raise DetectorError(f"{src.name} -> {dst.name}: config differs ({src.config} vs "
                                f"{dst.config})")
        if src.shapes != dst.shapes:
            raise DetectorError(f"{src.name} -> {dst.name}: weight shapes differ ({src.shapes} "
                                f"vs {dst.shapes})")
    return pairs


def conv_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The Conv2D settings that change what a kernel computes (Keras 2 or 3 config)."""
    return {k: _norm(cfg.get(k)) for k in
            ("filters", "kernel_size", "strides", "padding", "dilation_rate", "use_bias",
             "activation")}


def bn_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The BatchNormalization settings that change what it computes."""
    return {k: _norm(cfg.get(k)) for k in ("epsilon", "center", "scale")}


def _norm(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_norm(v) for v in value)
    if isinstance(value, float):
        return round(value, 9)
    return value


def source_specs(topology: dict[str, Any], weights: dict[str, np.ndarray], class_name: str,
                 kind: str) -> list[LayerSpec]:
    """LayerSpecs of the topology's `class_name` layers, with their weights' shapes."""
    make = conv_config if kind == "conv" else bn_config
    specs = []
    for layer in topology_layers(topology):
        if layer["class_name"] != class_name:
            continue
        prefix = layer["name"] + "/"
        shapes = {n[len(prefix):]: tuple(w.shape) for n, w in weights.items()
                  if n.startswith(prefix)}
        specs.append(LayerSpec(layer["name"], kind, make(layer["config"]), shapes))
    return specs


def head_layers(topology: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers after the last Concatenate (Inception's mixed10): the classifier head.

    Refused unless they form a single chain, each fed by the one before.
    """
    layers = topology_layers(topology)
    last = max((i for i, layer in enumerate(layers) if layer["class_name"] == "Concatenate"),
               default=None)
    if last is None:
        raise DetectorError("model topology has no Concatenate layer (not an Inception net)")
    head, previous = layers[last + 1 :], layers[last]["name"]
    for layer in head:
        inbound = layer.get("inbound_nodes") or []
        feeds = [node[0] for node in inbound[0]] if inbound else []
        if feeds != [previous]:
            raise DetectorError(f"head layer {layer['name']} is not fed by {previous} alone")
        previous = layer["name"]
    return head
