"""The printed table and the optional chart, both from the JSON result alone, so a result file
from another machine (the GPU script's) renders the same way."""

from __future__ import annotations

from typing import Any


def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _lat(run: dict[str, Any]) -> str:
    lat = run.get("latency") or {}
    if not lat:
        return "-"
    done = "" if lat.get("stored") == lat.get("sent") else f" ({lat['stored']}/{lat['sent']})"
    return f"{_f(lat.get('p50'), 2)} / {_f(lat.get('p95'), 2)} / {_f(lat.get('p99'), 2)}{done}"


def table(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    lines = [f"machine: {m.get('cpu_model')}, {m.get('logical_cpus')} CPUs, "
             f"{m.get('memory_gib')} GiB, GPUs: {', '.join(m.get('gpus') or []) or 'none'}; "
             f"TF {m.get('packages', {}).get('tensorflow')}; load at start "
             f"{m.get('load_average_at_start')}", ""]
    for precision, mb in (r.get("model") or {}).items():
        lines.append(f"Model bound ({precision}), input {r['settings']['input_size']} px")
        lines.append(f"  {'batch':>6} {'images/s':>10} {'first call s':>13}")
        for bs, v in mb["by_batch"].items():
            lines.append(f"  {bs:>6} {_f(v['per_s']):>10} {_f(v.get('first_call_s')):>13}")
    again = r.get("model_again")
    if again:
        lines.append(f"  again after the worker runs, batch {again['best_batch']}: "
                     f"{_f(again['best_per_s'])} images/s (the bound keeps the higher)")
    d = r.get("decode")
    if d:
        lines += ["", f"Decode bound (prepare, {d['images']} JPEGs, mean {d['mean_kib']} KiB), "
                  "images/s", f"  {'':>8} {'1 core':>8} {'processes':>10} {'threads':>8}"]
        for tag, name in (("", "whole"), ("tiles_", "tiles")):
            lines.append(f"  {name:>8} {_f(d[tag + 'one_core']['per_s']):>8} "
                         f"{_f(d[tag + 'all_cores']['per_s']):>10} "
                         f"{_f(d[tag + 'threads']['per_s']):>8}")
    for key, name in (("baseline", "full net"), ("baseline_shipped", "shipped taps")):
        b = r.get(key)
        if b:
            lines += ["", f"Seed-style loop ({name}): {_f(b['images_per_s'], 2)} images/s over "
                      f"{b['stored']} records; ms/record by stage: "
                      + ", ".join(f"{k} {v}" for k, v in b["ms_per_record_by_stage"].items())]
    runs = [("e2e", v) for v in ((r.get("e2e") or {}).get("by_batch") or {}).values()]
    if r.get("tiles"):
        runs.append(("tiles", r["tiles"]))
    if r.get("logo"):
        runs.append(("+1 logo", r["logo"]))
    two = (r.get("scaling") or {}).get("two_processes")
    if two:
        runs.append(("2 procs", two))
    if runs:
        lines += ["", "End to end (send -> commit)", f"  {'run':>8} {'batch':>6} "
                  f"{'images/s':>9} {'latency p50/p95/p99 s':>24} {'peak RSS MiB':>14} "
                  f"{'startup s':>10}"]
        for name, v in runs:
            lines.append(f"  {name:>8} {v['batch_size']:>6} {_f(v.get('images_per_s'), 2):>9} "
                         f"{_lat(v):>24} {', '.join(map(str, v.get('peak_rss_mib', []))):>14} "
                         f"{', '.join(map(str, v.get('startup_s', []))):>10}")
    sv = r.get("serve")
    if sv:
        lat = sv.get("latency") or {}
        lines += ["", f"serve (HTTP, batch {sv['batch_size']}): {sv['clients']} clients x "
                  f"{sv['images_per_request']} images/request: {_f(sv['images_per_s'], 2)} "
                  f"images/s, {sv['mean_batch']} images per model batch; one-image requests "
                  f"at {lat.get('offered_per_s')}/s: p50/p95/p99 {lat.get('p50')}/"
                  f"{lat.get('p95')}/{lat.get('p99')} s"]
    t = r.get("training")
    if t:
        ex, hd = t["extraction"], t["head"]
        lines += ["", f"Training: bottleneck extraction {_f(ex['images_per_s'], 2)} images/s "
                  f"(batch {ex['batch_size']}); head on {hd['embeddings']} cached embeddings: "
                  f"read {hd['cache_read_s']} s, fit {hd['fit_s']} s ({hd['iterations']} "
                  f"L-BFGS iterations, width {hd['dim']})"]
    q = r.get("ratios") or {}
    if q.get("vs_bound") is not None or q.get("vs_baseline") is not None:
        lines += ["", f"Ratios at best batch {q.get('best_batch')}:"]
        if q.get("vs_bound") is not None:
            lines.append(f"  end to end / min(model, decode) = {_f(q['end_to_end_per_s'], 2)} / "
                         f"{_f(q['bound_per_s'], 2)} = {_f(q['vs_bound'], 2)} (target >= 0.85: "
                         f"{_f(q['target_vs_bound']['met'])}); vs shared-CPU bound "
                         f"{_f(q['shared_cpu_bound_per_s'], 2)}: {_f(q['vs_shared_cpu_bound'], 2)}")
        if q.get("vs_baseline") is not None:
            lines.append(f"  end to end / seed-style loop, full net = {_f(q['vs_baseline'], 2)} "
                         f"(target >= 3: {_f(q['target_vs_baseline']['met'])})")
        if q.get("vs_baseline_shipped") is not None:
            lines.append("  end to end / seed-style loop, shipped taps = "
                         f"{_f(q['vs_baseline_shipped'], 2)} (the pipeline's share)")
        if q.get("tiles_vs_bound") is not None:
            lines.append(f"  tiles: {_f(q['tiles_per_s'], 2)} images/s vs bound "
                         f"{_f(q['tiles_bound_per_s'], 2)} = {_f(q['tiles_vs_bound'], 2)}")
        if q.get("logo_vs_e2e") is not None:
            lines.append(f"  one brand matched from its logo file: {_f(q['logo_per_s'], 2)} "
                         f"images/s = {_f(q['logo_vs_e2e'], 2)} of end to end without it")
        if q.get("two_vs_one_process") is not None:
            lines.append(f"  2 processes / 1 process = {_f(q['two_vs_one_process'], 2)}")
    if q.get("serve_vs_model_bound") is not None:
        lines.append(f"  serve / model bound = {_f(q['serve_per_s'], 2)} / "
                     f"{_f(q['serve_per_s'] / q['serve_vs_model_bound'], 2)} = "
                     f"{_f(q['serve_vs_model_bound'], 2)}"
                     + (f"; / min(model, decode) = {_f(q['serve_vs_bound'], 2)}"
                        if q.get("serve_vs_bound") is not None else "")
                     + (f"; half-load p50/p95 = {_f(q['serve_p50_in_batches'], 2)}/"
                        f"{_f(q['serve_p95_in_batches'], 2)} of one full model batch's time"
                        if q.get("serve_p50_in_batches") is not None else ""))
    if r.get("errors"):
        lines += ["", "Errors: " + "; ".join(f"{k}: {v[:200]}" for k, v in r["errors"].items())]
    lines += ["", f"total {r.get('total_seconds')} s; load average by section "
              f"{r.get('load_average')}"]
    return "\n".join(lines)


def chart(r: dict[str, Any], path: str) -> None:
    """Images/s by batch size: the model bound and the worker end to end, one picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for precision, mb in (r.get("model") or {}).items():
        xs = [int(k) for k in mb["by_batch"]]
        ax.plot(xs, [v["per_s"] for v in mb["by_batch"].values()], "o-",
                label=f"model bound ({precision})")
    e2e = (r.get("e2e") or {}).get("by_batch") or {}
    if e2e:
        ax.plot([int(k) for k in e2e], [v["images_per_s"] for v in e2e.values()], "s-",
                label="worker end to end")
    if r.get("decode"):
        ax.axhline(r["decode"]["per_s"], ls="--", c="grey", label="decode bound (all cores)")
    if r.get("baseline"):
        ax.axhline(r["baseline"]["images_per_s"], ls=":", c="red", label="seed-style baseline")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.set_title(r.get("machine", {}).get("cpu_model", ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
