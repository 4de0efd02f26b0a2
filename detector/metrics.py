"""Ranking and threshold metrics in plain numpy (no scikit-learn dependency for five formulas).

Average precision is the step-wise area under the PR curve (the sum over positives of the
precision at their rank), the usual "PR-AUC" that does not interpolate optimistically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.errors import DetectorError


@dataclass(frozen=True)
class Curve:
    """Precision and recall at every distinct score threshold, highest threshold first."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def pr_curve(y: np.ndarray, scores: np.ndarray) -> Curve:
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    pos = max(int(y.sum()), 1)
    return Curve(s[last], tp / np.maximum(tp + fp, 1), tp / pos)


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    c = pr_curve(y, scores)
    if not np.asarray(y).astype(bool).any():
        return float("nan")
    recall_steps = np.diff(np.r_[0.0, c.recall])
    return float(np.sum(recall_steps * c.precision))


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, np.float64)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def at_threshold(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and the confusion counts of `scores >= threshold`."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "threshold": float(threshold)}


def recall_at_precision(y: np.ndarray, scores: np.ndarray, min_precision: float) -> float:
    """The highest recall of any threshold whose precision is >= `min_precision` (0 if none)."""
    c = pr_curve(y, scores)
    ok = c.precision >= min_precision - 1e-12
    return float(c.recall[ok].max()) if ok.any() else 0.0


def choose_threshold(y: np.ndarray, scores: np.ndarray, policy: str) -> float:
    """A threshold from validation scores.

    `precision>=P`: the lowest threshold (highest recall) whose precision is >= P, falling
    back to best F1 when no threshold reaches P. `f1`: the threshold of best F1.
    """
    y = np.asarray(y).astype(bool)
    if not y.any():
        return 0.5
    c = pr_curve(y, scores)
    f1 = 2 * c.precision * c.recall / np.maximum(c.precision + c.recall, 1e-12)
    if policy == "f1":
        return float(c.thresholds[int(np.argmax(f1))])
    if policy.startswith("precision>="):
        target = float(policy.split(">=", 1)[1])
        ok = np.nonzero(c.precision >= target)[0]
        if len(ok):
            return float(c.thresholds[ok[np.argmax(c.recall[ok])]])
        return float(c.thresholds[int(np.argmax(f1))])
    raise DetectorError(f"unknown threshold policy {policy!r} (use 'precision>=0.9' or 'f1')")


def precision_at_recall(y: np.ndarray, scores: np.ndarray, min_recall: float) -> float:
    """The highest precision of any threshold whose recall is >= `min_recall` (0 if none)."""
    c = pr_curve(y, scores)
    ok = c.recall >= min_recall - 1e-12
    return float(c.precision[ok].max()) if ok.any() else 0.0
