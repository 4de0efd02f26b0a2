"""``python -m bench``: every benchmark section, a table on stdout and the JSON on disk.

Speed is never asserted by the test suite; this is where it is measured, as ratios against
yardsticks taken in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from bench.harness import SECTIONS, Harness, Settings


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("bench/results/latest.json"),
                   help="JSON result file (default bench/results/latest.json)")
    p.add_argument("--chart", type=Path, help="also draw images/s by batch size to this PNG")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default all)")
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--taps", default=d.taps,
                   help=f"embedding taps of the benchmarked bundle (default {d.taps}, the "
                   "shipped recipe's; the seed-style baseline also runs the full net)")
    p.add_argument("--model-batch-sizes", type=_ints, default=d.model_batch_sizes)
    p.add_argument("--e2e-batch-sizes", type=_ints, default=d.e2e_batch_sizes)
    p.add_argument("--records", type=int, default=d.records,
                   help="backlog records per worker configuration (keep a multiple of the "
                   "batch sizes, so every backlog batch is full)")
    p.add_argument("--tile-records", type=int, default=d.tile_records,
                   help="backlog records of the slower runs: tiles, and one brand matched "
                   f"from its logo file (default {d.tile_records})")
    p.add_argument("--baseline-records", type=int, default=d.baseline_records)
    p.add_argument("--latency-seconds", type=float, default=d.latency_seconds,
                   help="open-loop phase per configuration, at half its throughput (0: off)")
    p.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help="least timed seconds per model-bound batch size")
    p.add_argument("--images", type=int, default=d.images, help="distinct JPEGs generated")
    p.add_argument("--precisions", default=",".join(d.precisions),
                   help="model-bound precisions: default (what the bundle records), "
                   "float32, float16, bfloat16")
    p.add_argument("--head-embeddings", type=int, default=d.head_embeddings)
    p.add_argument("--serve-batch-size", type=int, default=d.serve_batch_size,
                   help="`logowatch serve --batch-size` in the serve section")
    p.add_argument("--serve-clients", type=int, default=d.serve_clients,
                   help="concurrent HTTP clients in the serve section's throughput phase")
    p.add_argument("--serve-images", type=int, default=d.serve_images,
                   help="images scored in the serve section's throughput phase")
    p.add_argument("--partitions", type=int, default=d.partitions)
    p.add_argument("--bootstrap-servers", dest="bootstrap",
                   help="use this broker instead of starting one")
    p.add_argument("--database-url", help="use this database instead of starting Postgres")
    p.add_argument("--py-spy-dir", help="record every worker with py-spy into this folder")
    p.add_argument("--workdir", help="keep bundle and worker logs here (default: a temp dir)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    names = {f.name for f in fields(Settings)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["sections"] = [s for s in args.sections.split(",") if s]
    values["precisions"] = [s for s in args.precisions.split(",") if s]
    unknown = set(values["sections"]) - set(SECTIONS)
    if unknown:
        print(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}", file=sys.stderr)
        return 2
    settings = Settings(**values)

    from bench import report

    result = Harness(settings, progress=lambda m: print(m, flush=True)).run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.chart:
        report.chart(result, str(args.chart))
    print()
    print(report.table(result))
    print(f"\nJSON: {args.out}" + (f"; chart: {args.chart}" if args.chart else ""))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
