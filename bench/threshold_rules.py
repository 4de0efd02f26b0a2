"""Threshold rules for mined marks, compared on `bench.real_logos --tuning --mined` output.

    PYTHONPATH=. python -m bench.threshold_rules tuning-mined.json

For each brand the tuning mined a mark for, the brand-less photos it searched while training
(`calibration_scores`: the 60 it was calibrated on; `negative_scores`: the other negatives and
the validation photos without the brand) give a threshold by each rule, and the scored half
(photos training never read) gives its recall and false-positive rate there. Precision is
quoted at the test side's prevalence (1 brand image to 16 without), pooled over brands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from detector.mining import tail_threshold

Rule = Callable[[list[float], list[float]], float]
RULES: dict[str, Rule] = {
    "99th percentile of the 60 calibration photos": lambda cal, free: float(
        np.quantile(cal, 0.99)),
    "max of the calibration photos": lambda cal, free: max(cal),
    "99th percentile of the others": lambda cal, free: float(np.quantile(free, 0.99)),
    "max of all": lambda cal, free: max(cal + free),
    "tail of the others, 1 in 300": lambda cal, free: tail_threshold(free, 1 / 300),
    "tail of the others, 1 in 1000": lambda cal, free: tail_threshold(free, 1e-3),
    "tail of all, 1 in 300": lambda cal, free: tail_threshold(cal + free, 1 / 300),
    "tail of all, 1 in 1000 (shipped)": lambda cal, free: tail_threshold(cal + free, 1e-3),
    "tail of all, 1 in 3000": lambda cal, free: tail_threshold(cal + free, 1 / 3000),
}
PREVALENCE = 16  # brand-less test images per brand image


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.threshold_rules TUNING_MINED.json", file=sys.stderr)
        return 2
    res = json.loads(Path(args[0]).read_text())
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in RULES}
    for seed in res["seeds"].values():
        for rec in seed["protocols"].get("labelled_photos_mined", {}).values():
            rep, raw = rec["report"], rec["raw"]
            if "calibration_scores" not in rep:  # no mark mined for this brand
                continue
            p = np.clip(np.array(raw["scores"]), 1e-300, 1 - 1e-16)
            z = rep["threshold"] + np.log(p / (1 - p))  # the z-score behind the 0..1 score
            y = np.array(raw["labels"], bool)
            for name, rule in RULES.items():
                t = rule(rep["calibration_scores"], rep["negative_scores"])
                rows[name].append((float(np.mean(z[y] >= t)), float(np.mean(z[~y] >= t))))
    print("| rule | brands | recall | false-positive rate | precision at 1:16 |")
    print("|---|---|---|---|---|")
    for name, v in rows.items():
        rec, fpr = np.array(v).mean(0) if v else (float("nan"), float("nan"))
        prec = rec / (rec + PREVALENCE * fpr) if rec + fpr > 0 else float("nan")
        print(f"| {name} | {len(v)} | {rec:.2f} | {fpr:.4f} | {prec:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
