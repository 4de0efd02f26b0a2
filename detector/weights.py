"""Backbone weight sources: real ImageNet-derived Inception v3 weights without internet access.

Keras downloads `imagenet` weights from a host that many deployment machines cannot reach,
while package registries usually are reachable. The npm package nsfwjs (MIT, Infinite Red)
ships a Keras 2.2.4 Inception v3 as a quantized TF.js model whose layers through `conv2d_55`
were frozen ImageNet weights when it was fine-tuned on NSFW classes. `import_weights` fetches
it once with the ordinary npm client, dequantizes it, maps it onto
`keras.applications.InceptionV3(include_top=False)` and caches a Keras weights file with its
provenance; later calls are offline and instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from detector import tfjs
from detector.errors import DetectorError

IMPORTED = ("nsfwjs",)
KERAS_FILE = "inception_v3_notop.weights.h5"
HEAD_FILE = "nsfwjs_head.npz"
PROVENANCE_FILE = "provenance.json"
TFJS_DIR = "tfjs"  # model.json + weights.bin, as extracted: the TF.js reference reads these
_FILES = (KERAS_FILE, HEAD_FILE, PROVENANCE_FILE, f"{TFJS_DIR}/model.json",
          f"{TFJS_DIR}/weights.bin", "LICENSE")
_ALTERNATIVES = ("use --weights imagenet on a machine with internet, a local weights file, "
                 "or --weights none (random)")


@dataclass(frozen=True)
class NpmSource:
    """A pinned npm tarball that holds a TF.js Inception v3."""

    package: str
    version: str
    sha256: str
    model_dir: str
    licence: str
    author: str


SOURCES: dict[str, NpmSource] = {
    "nsfwjs": NpmSource(
        package="nsfwjs", version="4.4.0",
        sha256="585cd178f3b994337c4d10a87b080d342fc52f8b9bf0085c4d1f345a3a1c5382",
        model_dir="package/dist/models/inception_v3", licence="MIT", author="Infinite Red, Inc.",
    ),
}


def cache_root() -> Path:
    """`$LOGOWATCH_CACHE/logowatch`, else `$XDG_CACHE_HOME/logowatch`, else ~/.cache/logowatch."""
    base = os.environ.get("LOGOWATCH_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "logowatch" if base else Path.home() / ".cache" / "logowatch"


def import_dir(name: str, cache: Path | None = None) -> Path:
    """Where `name` is imported: CACHE/weights/<package>-<version>, CACHE = cache_root()."""
    src = _source(name)
    return (cache or cache_root()) / "weights" / f"{src.package}-{src.version}"


def weights_file(name: str, *, cache: Path | None = None) -> Path | None:
    """The imported Keras weights file, or None when `name` was not imported (never fetches)."""
    target = import_dir(name, cache)
    return target / KERAS_FILE if _complete(target) else None


def provenance(name: str, *, cache: Path | None = None) -> dict[str, Any]:
    """The provenance record written by the import."""
    target = import_dir(name, cache)
    if not _complete(target):
        raise DetectorError(f"{name} weights are not imported; run `logowatch weights import "
                            f"{name}` (needs npm and the npm registry once)")
    return json.loads((target / PROVENANCE_FILE).read_text())


def default_weights() -> str:
    """'nsfwjs' when its imported weights exist, else 'none' (callers warn loudly on 'none')."""
    return "nsfwjs" if weights_file("nsfwjs") is not None else "none"


def import_weights(name: str = "nsfwjs", *, cache: Path | None = None,
                   progress: bool = True) -> Path:
    """Import `name` once into the cache and return its Keras weights file (idempotent).

    The first run needs npm, Node and the npm registry (a minute or two on two cores); the
    files appear all at once by renaming a finished staging folder, so a crash leaves nothing
    half-written. Later runs only check that the files exist.
    """
    src, target = _source(name), import_dir(name, cache)
    if _complete(target):
        return target / KERAS_FILE
    say = _Progress(f"import {name}", progress)
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise DetectorError(f"importing {name} weights needs Node.js and npm on PATH (missing: "
                            f"{'npm' if npm is None else 'node'}); {_ALTERNATIVES}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        tarball = _npm_pack(npm, src, staging, say)
        digest = _sha256(tarball)
        if digest != src.sha256:
            raise DetectorError(f"{tarball.name} has sha256 {digest}, expected {src.sha256}: "
                                "refusing to run or import it")
        say(f"tarball sha256 {digest[:16]}… verified; extracting the model files")
        model_src = _extract(tarball, src, staging)
        say("decoding the TF.js model with Node (evaluates the browserified modules)")
        _run_node(node, model_src, staging / TFJS_DIR)
        tarball.unlink()
        shutil.rmtree(model_src)
        say("dequantizing and mapping onto keras.applications.InceptionV3")
        record = _convert(staging, src, digest, say)
        (staging / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"done: {target / KERAS_FILE}")
    return target / KERAS_FILE


def build_nsfwjs_full(cache: Path | None = None) -> Any:
    """The whole nsfwjs classifier in Keras, for proving the import against TF.js.

    InceptionV3(include_top=False) with the imported weights, then the head the topology
    declares (AveragePooling2D 8x8 → Flatten → Dense 256 → Dense 128 → Dense 5), with the
    activations it names; dropout layers are skipped (inference only).
    """
    import keras

    target = import_dir("nsfwjs", cache)
    keras_file = weights_file("nsfwjs", cache=cache)
    if keras_file is None:
        raise DetectorError("nsfwjs weights are not imported; run `logowatch weights import "
                            "nsfwjs`")
    topology = json.loads((target / TFJS_DIR / "model.json").read_text())["modelTopology"]
    shape = tfjs.topology_layers(topology)[0]["config"]["batch_input_shape"][1:]
    base = keras.applications.InceptionV3(include_top=False, weights=None,
                                          input_shape=tuple(shape))
    base.load_weights(keras_file)
    head = np.load(target / HEAD_FILE)
    x = base.output
    for layer in tfjs.head_layers(topology):
        cfg, kind = layer["config"], layer["class_name"]
        if kind == "Dropout":
            continue
        if kind == "AveragePooling2D":
            x = keras.layers.AveragePooling2D(tuple(cfg["pool_size"]), tuple(cfg["strides"]),
                                              cfg["padding"], name=f"nsfwjs_{cfg['name']}")(x)
        elif kind == "Flatten":
            x = keras.layers.Flatten(name=f"nsfwjs_{cfg['name']}")(x)
        elif kind == "Dense":
            dense = keras.layers.Dense(cfg["units"], activation=cfg["activation"],
                                       use_bias=cfg["use_bias"], name=f"nsfwjs_{cfg['name']}")
            x = dense(x)
            dense.set_weights([head[f"{cfg['name']}/{v}"] for v in
                               (("kernel", "bias") if cfg["use_bias"] else ("kernel",))])
        else:
            raise DetectorError(f"nsfwjs head layer {layer['name']} ({kind}) is not supported")
    return keras.Model(base.input, x, name="nsfwjs_inception_v3")


def _source(name: str) -> NpmSource:
    if name not in SOURCES:
        raise DetectorError(f"unknown weights source {name!r}; choose from {list(IMPORTED)}")
    return SOURCES[name]


def _complete(target: Path) -> bool:
    return all((target / f).is_file() and (target / f).stat().st_size > 0 for f in _FILES)


class _Progress:
    """One line per step on stderr, with the seconds since the import began."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled, self.t0 = label, enabled, time.monotonic()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"{self.label} [{time.monotonic() - self.t0:5.1f}s] {message}",
                  file=sys.stderr, flush=True)


def _npm_pack(npm: str, src: NpmSource, staging: Path, say: _Progress) -> Path:
    spec = f"{src.package}@{src.version}"
    say(f"fetching {spec} with npm pack (about 25 MB)")
    try:
        done = subprocess.run(
            [npm, "pack", spec, "--json", "--pack-destination", str(staging)],
            cwd=staging, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DetectorError(f"npm pack {spec} took over 15 minutes; {_ALTERNATIVES}") from exc
    if done.returncode != 0:
        raise DetectorError(f"npm could not fetch {spec} (registry unreachable? "
                            f"{_npm_reason(done.stderr, done.returncode)}); {_ALTERNATIVES}")
    tarball = staging / f"{src.package}-{src.version}.tgz"
    if not tarball.is_file():
        raise DetectorError(f"npm pack {spec} did not write {tarball.name}")
    return tarball


def _npm_reason(stderr: str, returncode: int) -> str:
    """The line of npm's error report that says why, e.g. 'request to … failed, reason: …'."""
    lines = [re.sub(r"^npm (error|ERR!)\s*", "", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("A complete log", "at ", "{", "}"))]
    best = next((ln for ln in lines if "reason:" in ln or "Not Found" in ln),
                lines[0] if lines else f"exit status {returncode}")
    return best[:200]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_MODEL_FILE = re.compile(r"(model|group\d+-shard\d+of\d+)\.min\.js")


def _extract(tarball: Path, src: NpmSource, staging: Path) -> Path:
    """Copy out only the model modules and the licence; member names never become paths."""
    out = staging / "src"
    out.mkdir()
    found: set[str] = set()
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            folder, _, base = member.name.rpartition("/")
            if member.name == "package/LICENSE":
                base, dest = "LICENSE", staging / "LICENSE"
            elif folder == src.model_dir and _MODEL_FILE.fullmatch(base):
                dest = out / base
            else:
                continue
            data = tar.extractfile(member) if member.isfile() else None
            if data is None:
                raise DetectorError(f"{tarball.name}: {member.name} is not a regular file")
            dest.write_bytes(data.read())
            found.add(base)
    for needed in ("LICENSE", "model.min.js"):
        if needed not in found:
            raise DetectorError(f"{tarball.name} has no {needed} where expected "
                                f"({src.model_dir}): the package layout changed")
    licence = (staging / "LICENSE").read_text(errors="replace")
    if not licence.startswith(f"{src.licence} License"):
        raise DetectorError(f"{tarball.name}: LICENSE is not the expected {src.licence} licence")
    return out


def _run_node(node: str, model_src: Path, out: Path) -> None:
    out.mkdir()
    script = resources.files("detector") / "nsfwjs_extract.js"
    with resources.as_file(script) as path:
        try:
            done = subprocess.run([node, str(path), str(model_src), str(out)],
                                  capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DetectorError("node took over 10 minutes to decode the model") from exc
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DetectorError(f"cannot decode the nsfwjs model with node: {why}")


def _convert(staging: Path, src: NpmSource, digest: str, say: _Progress) -> dict[str, Any]:
    """Dequantize, map onto Keras, save the weights files; return the provenance record."""
    model_json = json.loads((staging / TFJS_DIR / "model.json").read_text())
    topology, manifest = model_json["modelTopology"], model_json["weightsManifest"]
    blob = (staging / TFJS_DIR / "weights.bin").read_bytes()
    values = tfjs.read_weights(manifest, blob)
    n_quantized = sum(1 for s in tfjs.parse_manifest(manifest) if s.quant_dtype)
    import keras

    model = keras.applications.InceptionV3(include_top=False, weights=None)
    used = assign_by_creation_order(model, topology, values)
    model.save_weights(staging / KERAS_FILE)
    head = {n: v for n, v in values.items() if n not in used}
    if sorted({n.split("/")[0] for n in head}) != ["dense_1", "dense_2", "dense_3"]:
        raise DetectorError(f"unexpected weights outside the backbone: {sorted(head)}")
    np.savez(staging / HEAD_FILE, **head)
    frozen = tfjs.frozen_layers(topology)
    say(f"{len(used)} backbone weights mapped, {len(head)} head weights kept; saved")
    return {
        "package": src.package, "version": src.version, "source": "npm",
        "tarball_sha256": digest, "licence": src.licence, "licence_holder": src.author,
        "model": f"{src.model_dir}/model.min.js",
        "keras_version_of_model": topology.get("keras_version"),
        "weights": len(values), "quantized_weights": n_quantized,
        "frozen_through": tfjs.frozen_through(topology),
        "imagenet_frozen_layers": len(frozen),
        "imagenet_frozen_weighted_layers": sum(
            1 for n in frozen if any(k.startswith(n + "/") for k in values)),
        "mapping": "Conv2D and BatchNormalization layers paired by creation order onto "
                   "keras.applications.InceptionV3(include_top=False); configs and shapes "
                   "checked",
        "keras_file": KERAS_FILE, "keras_file_sha256": _sha256(staging / KERAS_FILE),
        "keras_version": keras.__version__,
        "head_file": HEAD_FILE,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def assign_by_creation_order(model: Any, topology: dict[str, Any],
                             values: dict[str, np.ndarray]) -> set[str]:
    """Copy the topology's Conv2D/BatchNormalization weights into `model`'s, paired by creation
    order with every config and shape checked; return the manifest names used."""
    import keras

    used: set[str] = set()
    for cls, kind, base in ((keras.layers.Conv2D, "conv", "conv2d"),
                            (keras.layers.BatchNormalization, "bn", "batch_normalization")):
        make = tfjs.conv_config if kind == "conv" else tfjs.bn_config
        layers = {layer.name: layer for layer in model.layers if type(layer) is cls}
        target = [tfjs.LayerSpec(
            n, kind, make(layer.get_config()),
            {w.path.rsplit("/", 1)[-1]: tuple(w.shape) for w in layer.weights})
            for n, layer in layers.items()]
        source = tfjs.source_specs(topology, values, cls.__name__, kind)
        for src, dst in tfjs.pair_layers(source, target, base):
            for w in layers[dst.name].weights:
                key = f"{src.name}/{w.path.rsplit('/', 1)[-1]}"
                w.assign(values[key])
                used.add(key)
    return used


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished staging folder into place (replacing an incomplete leftover)."""
    if target.exists():
        if _complete(target):  # another process finished first
            return
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        target.rename(trash / "x")
        shutil.rmtree(trash, ignore_errors=True)
    staging.rename(target)
