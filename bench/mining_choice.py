"""Is mining's choice the loss? Every candidate `logowatch train` cut for a brand, searched
on the test side: its own test AP against its choice-set AP (what `mining.mine` chose by).

A measurement, not a product path. It needs a finished `python -m bench.real_logos` run of
the same seeds (its JSON: the candidates' choice-set APs, and the data sets in --work). Each
brand's candidates are cut again as `logowatch train` cut them (the same train/validation
split, the same brand-less photos: mining is deterministic since the RNG reset in
`mining.votes`, and the boxes are checked against the run's), calibrated alike and searched
without their consensus redraw on every test positive of the brand and --negatives of its
brand-less test images (AP against fewer negatives reads higher than the run's).

    PYTHONPATH=. python -m bench.mining_choice RUN.json --seeds 0,1,2 --out choice.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import say


def brand_candidates(work: Path, seed: int, brand: str, negatives: int) -> list[dict[str, Any]]:
    """The test AP of each candidate `logowatch train` cuts for brand on seed's training side."""
    import cv2  # type: ignore[import-not-found]

    from detector import mining as M
    from detector.datasets import list_examples
    from detector.exemplar import Exemplar, Photo, decoded
    from detector.synth import read_manifest
    from detector.train import TrainConfig

    cv2.setNumThreads(1)  # one brand per core
    cfg = TrainConfig()
    examples, _ = list_examples(work / f"seed{seed}" / "train",
                                validation_pct=cfg.validation_pct, test_pct=cfg.test_pct)
    train = [e for e in examples if e.split == "train"]
    val = [e for e in examples if e.split == "validation"]
    brands = sorted({b for e in examples for b in e.brands})
    job = next(j for j in M.jobs_for(train, val, brands, {}, cfg.seed) if j.brand == brand)

    def read(paths: list[Path]) -> list[Any]:
        return [Photo(decoded(p.read_bytes())[0]) for p in paths]

    pos, others = read(job.positives), read(job.negatives)
    found = M.candidates([M._reduced(p.img) for p in pos], [M._reduced(p.img) for p in others])
    test = work / f"seed{seed}" / "test"
    rows = read_manifest(test / "truth.csv")
    hits = [test / r.file for r in rows if brand in r.brands]
    free = [test / r.file for r in rows if brand not in r.brands]
    pick = np.random.default_rng(7).choice(len(free), min(negatives, len(free)), replace=False)
    images = read(hits + [free[int(i)] for i in sorted(pick)])
    y = np.arange(len(images)) < len(hits)
    out = []
    for c in found:
        ex = Exemplar(c.mask)
        ex.calibrate(others[:M.CALIBRATION])
        s = np.array([-np.inf if (m := ex.search(p)) is None else m.score for p in images])
        out.append({"box": list(c.box), "photo": job.positives[c.source].name,
                    "test_average_precision": M.average_precision(y, s)})
    return out


def _one(arg: tuple[Path, int, str, int]) -> list[dict[str, Any]]:
    return brand_candidates(*arg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mining_choice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a bench.real_logos JSON (protocol (a), marks mined)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of that run")
    p.add_argument("--work", default=".logowatch/bench-real-logos",
                   help="that run's --work folder")
    p.add_argument("--negatives", type=int, default=200,
                   help="brand-less test images per brand (default 200)")
    p.add_argument("--workers", type=int, default=2, help="brands at once (default 2)")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    if args.workers < 1 or args.negatives < 1:
        p.error("--workers and --negatives take a positive integer")
    try:
        run = json.loads(Path(args.run).read_text())
        seeds = [s.strip() for s in args.seeds.split(",") if s.strip()]
        todo = [(int(s), b) for s in seeds for b in run["seeds"][s]["brands"]]
    except (OSError, ValueError, KeyError) as exc:
        p.error(f"{args.run}: not a bench.real_logos run with seeds {args.seeds} ({exc})")
    work = Path(args.work)
    for s in seeds:
        if not (work / f"seed{s}" / "test" / "truth.csv").is_file():
            p.error(f"{work}/seed{s}: no test side there (run python -m bench.real_logos first)")
    res: dict[str, Any] = {"run": args.run, "negatives": args.negatives, "brands": {}}
    chosen, best, sel_all, test_all = [], [], [], []
    say(f"[mining-choice] {len(todo)} brands, {args.workers} at once (minutes each)")
    pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    with pool:  # each brand reported as it ends, in order
        found = pool.map(_one, [(work, s, b, args.negatives) for s, b in todo])
        for (seed, brand), cands in zip(todo, found, strict=True):
            rep = run["seeds"][str(seed)]["labelled_validation"][brand]["mark"]["candidates"]
            if [c["box"] for c in rep] != [c["box"] for c in cands]:
                say(f"[mining-choice] seed {seed} {brand}: the candidates differ from the run's "
                    "(another machine or another detector/): their choice-set APs do not apply")
                continue
            sel = [c["selection_average_precision"] for c in rep]
            test = [c["test_average_precision"] for c in cands]
            i = int(np.argmax(sel))  # mine's choice: the first of a tie
            chosen.append(test[i])
            best.append(max(test))
            sel_all += sel
            test_all += test
            res["brands"][f"{seed}/{brand}"] = {"selection": sel, "test": test, "kept": i}
            say(f"[mining-choice] seed {seed} {brand}: choice-set AP "
                f"{' '.join(f'{v:.2f}' for v in sel)}, test AP {' '.join(f'{v:.2f}' for v in test)}"
                f", kept {i}")
    if chosen:
        res["summary"] = {
            "brands": len(chosen), "kept_mean": float(np.mean(chosen)),
            "best_mean": float(np.mean(best)),
            "kept_is_best": int(sum(a == b for a, b in zip(chosen, best, strict=True))),
            "candidates": len(sel_all),
            "pearson_selection_test": float(np.corrcoef(sel_all, test_all)[0, 1])}
        say(f"[mining-choice] {json.dumps(res['summary'])}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
