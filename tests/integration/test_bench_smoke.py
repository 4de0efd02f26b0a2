"""The benchmark harness runs end to end on a tiny N and writes a complete result.

Only the shape of the result is checked, never a duration or a rate: speed is the harness's
business (``python -m bench``), and a timed assertion on a shared machine would be noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.data import LOGO_BRAND
from tests.support.pipeline import rows

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_bench_runs_every_section_once_and_writes_ratios_json_and_chart(
    bootstrap: str, migrated_db: str, tmp_path: Path
) -> None:
    out, chart = tmp_path / "result.json", tmp_path / "chart.png"
    argv = [sys.executable, "-m", "bench", "--out", str(out), "--chart", str(chart),
            "--bootstrap-servers", bootstrap, "--database-url", migrated_db,
            "--input-size", "75", "--model-batch-sizes", "1,4", "--e2e-batch-sizes", "4",
            "--records", "8", "--tile-records", "4", "--baseline-records", "4",
            "--latency-seconds", "1", "--min-seconds", "0.2", "--images", "4",
            "--head-embeddings", "300", "--serve-batch-size", "4", "--serve-images", "16",
            "--workdir", str(tmp_path / "work")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=800,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                               "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["errors"] == {}
    assert {"cpu_model", "logical_cpus", "packages"} <= set(result["machine"])
    assert set(result["model"]["default"]["by_batch"]) == {"1", "4"}
    assert {"one_core", "all_cores", "threads", "tiles_all_cores"} <= set(result["decode"])
    assert result["baseline"]["stored"] == 4 and result["baseline_shipped"]["stored"] == 4
    assert result["training"]["head"]["embeddings"] == 300
    assert result["serve"]["images"] == 16 and result["serve"]["latency"]["p95"] > 0
    run = result["e2e"]["by_batch"]["4"]
    assert run["stored"] == 8 and run["statuses"] == {"ok": 8}
    assert run["latency"]["stored"] == run["latency"]["sent"]
    assert run["peak_rss_mib"][0] > 0
    assert result["tiles"]["tiles"] is True and result["tiles"]["stored"] == 4
    assert result["logo"]["stored"] == 4 and result["logo"]["statuses"] == {"ok": 4}
    found = rows(migrated_db, "SELECT count(*), count(region) FROM detections WHERE brand = :b",
                 b=LOGO_BRAND)
    assert found[0][0] >= 4 and found[0][0] == found[0][1]  # the worker matched it, with boxes
    assert len(result["scaling"]["two_processes"]["peak_rss_mib"]) == 2
    for key in ("vs_bound", "vs_baseline", "vs_baseline_shipped", "vs_shared_cpu_bound",
                "tiles_vs_bound", "logo_vs_e2e", "two_vs_one_process", "serve_vs_model_bound"):
        assert result["ratios"][key] > 0
    assert set(result["ratios"]["target_vs_bound"]) == {"target", "met"}
    assert chart.stat().st_size > 0
    assert "Ratios at best batch 4" in done.stdout
