"""``python -m bench.gpu_check`` (run by bench/gpu.sh): the served network on a GPU in PyTorch.

From `bench.gpu_export`'s folder, in one bounded run: the GPU as PyTorch sees it; the
network's outputs against TensorFlow's on the fixed inputs (max abs difference, float32 and
bfloat16); images/s of the network (backbone + heads, uint8 input already on the device) at
each batch size, bfloat16 first, then float32 (TF32 convolutions), channels-last and
`torch.compile`d (eager where compiling fails, and the JSON says so); and the decode bound of
`detector.preprocess` in one process per core (`bench.bounds.decode_bound`). The JSON is
rewritten after every measurement, so a run cut short still leaves what it measured.

These are the same weights through another runtime: the ceiling a GPU worker could reach and
how much host decoding would feed it. The production GPU path (TensorFlow, the `gpu` extra)
is not what runs here. `--dry-run` runs every step on the CPU at tiny sizes (compiling with
the `eager` backend, which traces the graph without generating code), so a lent device is
not spent on a typo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from workers.config import first_line  # os and enum only: importable on the device

DEADLINE_S = 390.0  # the whole run; the device call's limit is 540 s
COMPILE_RESERVE_S = 90.0  # no new compile starts with less time than this left
PRECISIONS = ("bfloat16", "float32")
# float32 embeddings may differ from TensorFlow's by this fraction of their largest value
# (summation order, cuDNN's algorithms); more means the network was rebuilt wrong
FLOAT32_TOLERANCE = 1e-3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from logowatch.cli import OneLineParser

    p = OneLineParser(prog="python -m bench.gpu_check", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, default=Path("build/gpu-check"),
                   help="bench.gpu_export's folder (default build/gpu-check)")
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, batch 2 and 4, a fraction of a second a point, 2 decode workers")
    p.add_argument("--batch-sizes", help="default 64,128,256,512,1024 (dry run: 2,4)")
    p.add_argument("--seconds", type=float, help="timed seconds a point (default 4; dry: 0.2)")
    p.add_argument("--deadline", type=float, default=DEADLINE_S,
                   help=f"seconds for the whole run (default {DEADLINE_S:g})")
    args = p.parse_args(argv)
    try:
        sizes = args.batch_sizes or ("2,4" if args.dry_run else "64,128,256,512,1024")
        args.batch_sizes = [int(b) for b in sizes.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch-sizes {args.batch_sizes!r}: expected integers, e.g. 64,128")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes must be positive integers")
    args.seconds = args.seconds or (0.2 if args.dry_run else 4.0)
    if args.seconds <= 0 or args.deadline <= 0:
        p.error("--seconds and --deadline must be > 0")
    if not (args.export / "net.json").is_file():
        p.exit(1, f"gpu_check: no export in {args.export} (make it with python -m "
                  "bench.gpu_export --model BUNDLE --out DIR)\n")
    return args


class Run:
    """The result document, written to `path` whenever it changes."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.path, self.started, self.deadline = path, time.monotonic(), deadline
        self.doc: dict[str, Any] = {"errors": []}

    def left(self) -> float:
        return self.deadline - (time.monotonic() - self.started)

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def save(self) -> None:
        self.doc["wall_s"] = round(time.monotonic() - self.started, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.doc, indent=2) + "\n")


def environment(torch: Any, device: Any) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                           "cpus": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def check(torch: Any, folder: Path, device: Any, run: Run) -> dict[str, Any]:
    """Outputs on the reference inputs against TensorFlow's, per precision (eager)."""
    from bench import torchnet

    with np.load(folder / "reference.npz") as z:
        pixels, emb_tf, scores_tf = z["pixels"], z["embeddings"], z["scores"]
    x = torch.from_numpy(pixels).to(device)
    out: dict[str, Any] = {"images": len(pixels), "embed_dim": int(emb_tf.shape[1]),
                           "embedding_max_abs": float(np.abs(emb_tf).max())}
    for name in PRECISIONS:
        model = torchnet.load(folder, getattr(torch, name), device)
        with torch.inference_mode():
            emb, scores = (t.float().cpu().numpy() for t in model(x))
        d_emb, d_scores = np.abs(emb - emb_tf), np.abs(scores - scores_tf)
        out[name] = {"embedding_max_abs_diff": float(d_emb.max()),
                     "embedding_max_rel_diff": float(d_emb.max()) / out["embedding_max_abs"],
                     "scores_max_abs_diff": float(d_scores.max()),
                     "same_decisions_at_0.5": bool(((scores > 0.5) == (scores_tf > 0.5)).all())}
        run.say(f"check {name}: embedding max |diff| {d_emb.max():.3g} (max |ref| "
                f"{out['embedding_max_abs']:.3g}), scores max |diff| {d_scores.max():.3g}")
    f32 = out["float32"]
    if f32["embedding_max_rel_diff"] > FLOAT32_TOLERANCE or f32["scores_max_abs_diff"] > 1e-3:
        run.doc["errors"].append(f"float32 outputs differ from TensorFlow's: {f32}")
    return out


def _point(torch: Any, fn: Any, x: Any, ref: tuple[np.ndarray, np.ndarray], seconds: float
           ) -> dict[str, Any]:
    """One batch size: the first call (compiling, cuDNN's algorithm search) timed apart, then
    images/s; a batch that holds the reference images checks the graph's own outputs too."""
    from bench.bounds import rate

    def step() -> int:
        fn(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        return len(x)

    with torch.inference_mode():
        started = time.perf_counter()
        step()
        point = {"first_call_s": round(time.perf_counter() - started, 2)}
        point.update(rate(step, seconds, 3))
        pixels, embeddings = ref
        if len(x) >= len(pixels):
            x[: len(pixels)] = torch.from_numpy(pixels).to(x.device)
            emb = fn(x)[0][: len(pixels)].float().cpu().numpy()
            point["embedding_max_abs_diff"] = float(np.abs(emb - embeddings).max())
    return point


def model_bound(torch: Any, folder: Path, device: Any, args: argparse.Namespace,
                run: Run) -> None:
    """images/s per precision and batch size; stops starting new points near the deadline."""
    from bench import torchnet

    backend = "eager" if args.dry_run else "inductor"
    size = int(json.loads((folder / "net.json").read_text())["input_size"])
    with np.load(folder / "reference.npz") as z:
        ref = z["pixels"], z["embeddings"]
    result = run.doc["model"] = {"input": "uint8 NHWC on the device", "compile_backend": backend,
                                 "by_precision": {}}
    for name in PRECISIONS:
        torch.compiler.reset()  # each precision's shapes get dynamo's whole recompile budget
        model = torchnet.load(folder, getattr(torch, name), device)
        try:
            fn, compiled = torch.compile(model, backend=backend, dynamic=False), True
        except Exception as exc:  # compiling is an optimisation: measure eager instead
            fn, compiled = model, False
            run.doc["errors"].append(f"torch.compile {name}: {_first_line(exc)}")
        points = result["by_precision"][name] = {}
        reserve = 0.0 if args.dry_run else COMPILE_RESERVE_S
        for bs in args.batch_sizes:
            if run.left() < reserve + args.seconds:
                points[str(bs)] = {"skipped": f"deadline ({run.left():.0f} s left)"}
                run.say(f"model {name} batch {bs}: skipped, {run.left():.0f} s left")
                continue
            x = torch.randint(0, 256, (bs, size, size, 3), dtype=torch.uint8, device=device)
            point = None
            while point is None:
                try:
                    point = {**_point(torch, fn, x, ref, args.seconds), "compiled": compiled}
                except Exception as exc:  # an out-of-memory or a compile failure
                    run.doc["errors"].append(f"{name} batch {bs}"
                                             f"{' compiled' if compiled else ''}: "
                                             f"{_first_line(exc)}")
                    if not compiled:
                        point = {"failed": _first_line(exc)}
                    fn, compiled = model, False  # compiling is an optimisation: go on eager
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            if "per_s" in point:
                run.say(f"model {name} batch {bs}: {point['per_s']:.1f} images/s (first call "
                        f"{point['first_call_s']:.1f} s{'' if point['compiled'] else ', eager'})")
            else:
                run.say(f"model {name} batch {bs}: failed, {point['failed']}")
            points[str(bs)] = point
            run.save()
        done = [(int(b), p["per_s"]) for b, p in points.items() if "per_s" in p]
        if done:
            best = max(done, key=lambda bp: bp[1])
            result[f"best_{name}"] = {"batch": best[0], "per_s": best[1]}
        del model, fn
        if device.type == "cuda":
            torch.cuda.empty_cache()


def decode(folder: Path, size: int, args: argparse.Namespace, run: Run) -> None:
    from bench.bounds import decode_bound

    jpegs = [p.read_bytes() for p in sorted((folder / "jpegs").glob("*.jpg"))]
    workers = 2 if args.dry_run else os.cpu_count() or 1
    seconds = 0.1 if args.dry_run else 3.0
    run.say(f"decode bound: {len(jpegs)} JPEGs, {workers} processes, {seconds:g} s a point")
    run.doc["decode"] = decode_bound(jpegs[:4] if args.dry_run else jpegs, size,
                                     min_seconds=seconds, workers=workers)
    d = run.doc["decode"]
    run.say(f"decode bound: {d['per_s']:.0f} images/s on {workers} processes "
            f"({d['one_core']['per_s']:.0f} on one core), tiles {d['tiles_per_s']:.0f}")
    run.save()


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """Best model rate against the decode bound: how many cores of decoding one GPU needs."""
    model, dec = doc.get("model", {}), doc.get("decode")
    out: dict[str, Any] = {}
    for name in PRECISIONS:
        best = model.get(f"best_{name}")
        if best and dec:
            out[name] = {"model_per_s": round(best["per_s"], 1), "batch": best["batch"],
                         # significant digits, not decimals: on a loaded CPU the dry run's
                         # model is slow, and 0.02 cores rounded to 0.0 read as "none"
                         "model_over_decode": float(f"{best['per_s'] / dec['per_s']:.3g}"),
                         "decode_cores_needed": float(
                             f"{best['per_s'] / dec['one_core']['per_s']:.3g}")}
    return out


def table(doc: dict[str, Any]) -> str:
    rows = ["| precision | batch | images/s | first call s | compiled |",
            "|---|---|---|---|---|"]
    for name, points in doc.get("model", {}).get("by_precision", {}).items():
        for bs, p in points.items():
            if "per_s" in p:
                rows.append(f"| {name} | {bs} | {p['per_s']:.1f} | {p['first_call_s']} | "
                            f"{p['compiled']} |")
            else:
                rows.append(f"| {name} | {bs} | {p.get('skipped') or p['failed']} | | |")
    d = doc.get("decode")
    if d:
        rows.append(f"\ndecode bound: {d['per_s']:.1f} images/s ({d['workers']} processes), "
                    f"one core {d['one_core']['per_s']:.1f}, with tiles {d['tiles_per_s']:.1f}")
    for name, s in doc.get("summary", {}).items():
        rows.append(f"{name}: best model / decode bound = {s['model_over_decode']} "
                    f"({s['decode_cores_needed']} cores of decoding per GPU)")
    return "\n".join(rows)


def _first_line(exc: BaseException) -> str:
    return first_line(exc)[:300]  # a compiler's first line can be long


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args.out, args.deadline)
    try:
        import torch
    except ImportError:
        print("gpu_check: PyTorch is not installed (pip install -e '.[gpu-bench]')",
              file=sys.stderr)
        return 1
    if args.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("gpu_check: PyTorch sees no GPU; --dry-run runs on the CPU", file=sys.stderr)
        return 1
    net = json.loads((args.export / "net.json").read_text())
    run.doc.update(dry_run=args.dry_run, bundle=net["bundle"], input_size=net["input_size"],
                   taps=[f"{t['op']}:{t['pool']}" for t in net["taps"]],
                   weights_dtype=net["weights_dtype"])
    try:  # whatever fails, what was measured before it is in the JSON
        decode(args.export, net["input_size"], args, run)  # forks: before CUDA is initialised
        run.doc["environment"] = environment(torch, device)
        run.say(f"{run.doc['environment']}")
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        run.doc["check"] = check(torch, args.export, device, run)
        run.save()
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        model_bound(torch, args.export, device, args, run)
        run.doc["summary"] = summary(run.doc)
    finally:
        run.save()
    print(table(run.doc))
    print(f"JSON: {args.out}")
    return 1 if run.doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
