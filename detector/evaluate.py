"""Evaluation of a bundle on labelled folders: a JSON report and PNG charts, with/without tiles.

Written for the person deciding whether a model may go live: per brand precision, recall and
F1 at the bundle's own threshold, PR-AUC and ROC AUC, the confusion matrix, and the
misclassified images themselves (a contact sheet), because a number alone does not say
whether the misses are small logos, occlusions or look-alikes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from detector.bundle import Bundle
from detector.datasets import BottleneckCache, Example, iter_split, list_examples, thumbnail
from detector.metrics import at_threshold, average_precision, pr_curve, roc_auc
from detector.train import gather, image_scores, labels


def brand_report(
    y: np.ndarray, scores: np.ndarray, threshold: float, examples: list[Example]
) -> dict[str, Any]:
    small = np.array([e.small for e in examples]) & y.astype(bool)
    res = {
        **at_threshold(y, scores, threshold),
        "average_precision": average_precision(y, scores),
        "roc_auc": roc_auc(y, scores),
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
    }
    if small.any():
        res["small_logo_recall"] = float((scores[small] >= threshold).mean())
    return res


def logo_scores(bundle: Bundle, examples: list[Example], progress: bool = True) -> np.ndarray:
    """(images, logo brands) scores as the worker finds them (`detector.exemplar.find_all`);
    0 where the image cannot be decoded (gather has already left unreadable files out)."""
    from detector.exemplar import find_all
    from detector.preprocess import DEFAULT_MAX_PIXELS, ImageError
    from detector.progress import progress as bar

    out = np.zeros((len(examples), len(bundle.logos)), np.float32)
    for i, e in enumerate(bar(examples, enabled=progress, desc="logo brands", unit="img")):
        try:
            found = find_all(bundle.logos, e.path.read_bytes(), DEFAULT_MAX_PIXELS)
        except (ImageError, OSError):
            continue
        out[i] = [found[b][0] for b in bundle.logos]
    return out


def evaluate_bundle(
    bundle: Bundle,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    cache_dir: str | Path | None = None,
    validation_pct: float = 10.0,
    test_pct: float = 10.0,
    progress: bool = True,
    charts: bool = True,
) -> dict[str, Any]:
    """Score the `split` of `data_dir`, write report.json and the charts, return the report."""
    from detector.errors import DetectorError

    examples, _ = list_examples(data_dir, validation_pct=validation_pct, test_pct=test_pct)
    chosen = list(iter_split(examples, split))
    if not chosen:
        raise DetectorError(f"split {split!r} of {data_dir} is empty")
    cache = BottleneckCache.for_backbone(cache_dir or Path(data_dir) / ".bottlenecks",
                                         bundle.backbone)
    feats = gather(chosen, bundle.backbone, cache, tiles=bundle.tiles, progress=progress)
    modes = {"whole_image": image_scores(bundle.heads, feats, False)}
    if bundle.tiles is not None:
        modes["tiles"] = image_scores(bundle.heads, feats, True)
    if bundle.logos:  # a logo brand's score does not depend on tiles: the same in each mode
        found = logo_scores(bundle, feats.examples, progress)
        modes = {mode: np.concatenate([scores, found], axis=1) for mode, scores in modes.items()}
    brands = bundle.heads.brands + list(bundle.logos)
    report: dict[str, Any] = {
        "bundle": {"path": str(bundle.path), "version": bundle.version,
                   "backbone": bundle.metadata["backbone"], "tiles": bundle.metadata["tiles"]},
        "data": {"dir": str(data_dir), "split": split, "images": len(feats.examples)},
        "thresholds": bundle.thresholds,
        "modes": {},
    }
    main_mode = "tiles" if "tiles" in modes else "whole_image"
    misses: list[dict[str, Any]] = []
    for mode, scores in modes.items():
        per = {}
        for j, brand in enumerate(brands):
            y = labels(feats.examples, brand)
            per[brand] = brand_report(y, scores[:, j], bundle.thresholds[brand], feats.examples)
            if mode == main_mode:
                pred = scores[:, j] >= bundle.thresholds[brand]
                for i in np.nonzero(pred != y.astype(bool))[0]:
                    misses.append({"file": str(feats.examples[i].path), "brand": brand,
                                   "truth": bool(y[i]), "score": float(scores[i, j]),
                                   "kind": "false_negative" if y[i] else "false_positive"})
        report["modes"][mode] = per
    report["misclassified"] = misses
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if charts:
        report["charts"] = draw_charts(report, feats, modes, main_mode, bundle, out, misses)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def draw_charts(
    report: dict[str, Any], feats: Any, modes: dict[str, np.ndarray], main_mode: str,
    bundle: Bundle, out: Path, misses: list[dict[str, Any]],
) -> list[str]:
    """pr_curve.png, confusion.png, misclassified.png; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for mode, scores in modes.items():
        for j, brand in enumerate(report["modes"][mode]):
            y = labels(feats.examples, brand)
            if not y.any():
                continue
            c = pr_curve(y, scores[:, j])
            ap = report["modes"][mode][brand]["average_precision"]
            ax.step(c.recall, c.precision, where="post", label=f"{brand} {mode} (AP {ap:.2f})")
            r = report["modes"][mode][brand]
            ax.plot([r["recall"]], [r["precision"]], "o", color=ax.lines[-1].get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title="Precision-recall (dots: bundle thresholds)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out / "pr_curve.png", dpi=110)
    plt.close(fig)

    n = len(report["modes"][main_mode])
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for j, brand in enumerate(report["modes"][main_mode]):
        r = report["modes"][main_mode][brand]
        m = np.array([[r["tn"], r["fp"]], [r["fn"], r["tp"]]])
        ax = axes[0, j]
        ax.imshow(m, cmap="Blues")
        for (a, b), v in np.ndenumerate(m):
            ax.text(b, a, str(v), ha="center", va="center",
                    color="white" if v > m.max() / 2 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["no", "yes"],
               yticklabels=["no", "yes"], xlabel="predicted", ylabel="true",
               title=f"{brand} ({main_mode})")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)

    shown = sorted(misses, key=lambda m: -abs(m["score"] - bundle.thresholds[m["brand"]]))[:24]
    cols = 6
    rows = max(1, (len(shown) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(shown):
            m = shown[k]
            ax.imshow(thumbnail(Path(m["file"])))
            tag = "FN" if m["kind"] == "false_negative" else "FP"
            ax.set_title(f"{tag} {m['brand']} {m['score']:.2f}\n{Path(m['file']).name[-18:]}",
                         fontsize=7, color="red" if tag == "FN" else "darkorange")
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center")
    fig.suptitle(f"Misclassified ({len(misses)} total, most confident first)")
    fig.tight_layout()
    fig.savefig(out / "misclassified.png", dpi=100)
    plt.close(fig)
    return ["pr_curve.png", "confusion.png", "misclassified.png"]
