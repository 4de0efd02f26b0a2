"""`logowatch classify` end to end, in process: folders, URL lists, resuming, exit codes, and
the worker's own scores for the same bundle and images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from logowatch.cli import main
from tests.support.http_server import ImageServer
from tests.support.memory_consumer import assert_same_detections, worker_detections
from tests.support.model import BRANDS

pytestmark = pytest.mark.integration


def _classify(*argv: str) -> int:
    return main(["classify", "--no-progress", *argv])


def test_a_folder_and_a_url_list_give_the_workers_scores_and_failures_exit_3(
        tiny_bundle: Path, tmp_path: Path, synth_images, image_server: ImageServer,  # type: ignore[no-untyped-def]
        canary_server: ImageServer) -> None:
    from detector.bundle import load_bundle

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    bodies = [body for _, body in synth_images[:4]]
    for i, body in enumerate(bodies[:2]):
        (folder / "sub" / f"{i}.jpg").write_bytes(body)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.md").write_text("not an image, not listed")
    urls = [image_server.add(f"/u{i}.jpg", body) for i, body in enumerate(bodies[2:])]
    canary_server.add("/x.jpg", bodies[0])
    listing = tmp_path / "urls.txt"
    listing.write_text("# campaign\n" + "\n".join([*urls, canary_server.url("/x.jpg")]) + "\n")
    out = tmp_path / "scores.jsonl"

    code = _classify("--model", str(tiny_bundle), "--no-tiles", "--allow-host",
                     image_server.host, "--out", str(out), str(folder), str(listing))
    assert code == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 * len(BRANDS)
    status = {r["image"]: r["status"] for r in rows}
    assert status[str(folder / "broken.png")] == "decode_failed"
    assert status[canary_server.url("/x.jpg")] == "blocked"
    assert canary_server.requests == []
    assert sum(s == "ok" for s in status.values()) == 4

    files = [str(folder / "sub" / f"{i}.jpg") for i in range(2)]
    for i, body in enumerate(bodies[:2]):  # the worker sees the files' bytes by URL
        image_server.add(f"/f{i}.jpg", body)
    worker = worker_detections(load_bundle(tiny_bundle, batch_size=8),
                               [*urls, *(image_server.url(f"/f{i}.jpg") for i in range(2))],
                               [image_server.host])
    same_as = dict(zip(files, (image_server.url(f"/f{i}.jpg") for i in range(2)), strict=True))
    got = {(same_as.get(r["image"], r["image"]), r["brand"]):
           (r["score"], r["present"], r["region"]) for r in rows if r["status"] == "ok"}
    assert_same_detections(got, worker)


def test_a_cut_short_csv_is_resumed_without_repeating_an_image(
        tiny_bundle: Path, tmp_path: Path, synth_images, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (_, body) in enumerate(synth_images[:3]):
        (folder / f"{i}.jpg").write_bytes(body)
    out = tmp_path / "scores.csv"
    assert _classify("--model", str(tiny_bundle), "--out", str(out), str(folder)) == 0
    whole = out.read_text()
    # a run killed while writing: the last image has half a row
    out.write_text(whole[: whole.rindex("\n", 0, len(whole) - 1) - 5])
    capsys.readouterr()
    assert _classify("--model", str(tiny_bundle), "--out", str(out), str(folder)) == 0
    assert "1 scored, 0 failed, 2 already in" in capsys.readouterr().err
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert sorted((r["image"], r["brand"]) for r in rows) == sorted(
        (str(folder / f"{i}.jpg"), b) for i in range(3) for b in BRANDS)
    first = {(r["image"], r["brand"]): r for r in csv.DictReader(whole.splitlines())}
    for r in rows:
        assert float(r["score"]) == pytest.approx(float(first[r["image"], r["brand"]]["score"]),
                                                  abs=1e-3)


def test_nothing_scored_is_exit_1_and_bad_input_is_one_line(
        tiny_bundle: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"\xff\xd8\xffnot a jpeg")
    assert _classify("--model", str(tiny_bundle), str(bad)) == 1
    captured = capsys.readouterr()
    assert "no image could be scored" in captured.err
    assert next(csv.DictReader(captured.out.splitlines()))["status"] == "decode_failed"

    assert _classify("--model", str(tiny_bundle), str(tmp_path / "missing")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err
    assert _classify("--model", str(tiny_bundle), "--out", str(tmp_path / "no" / "x.csv"),
                     str(bad)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err
    with pytest.raises(SystemExit) as exit_:
        _classify("--model", str(tiny_bundle), "--batch-size", "0", str(bad))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_bundle_trained_with_tiles_is_scored_with_its_tiles_without_a_flag(
        tiny_bundle: Path, tmp_path: Path, synth_images, image_server: ImageServer) -> None:  # type: ignore[no-untyped-def]
    from detector.bundle import load_bundle

    bundle = load_bundle(tiny_bundle, batch_size=8)
    assert bundle.tiles is not None  # its thresholds were tuned on the max over the tiles
    urls = [image_server.add(f"/t{i}.jpg", body) for i, (_, body) in
            enumerate(synth_images[:3])]
    out = tmp_path / "tiles.jsonl"
    assert _classify("--model", str(tiny_bundle), "--allow-host", image_server.host,
                     "--out", str(out), *urls) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(r["region"]) == 4 for r in rows if r["region"] is not None)
    assert any(r["region"] is not None for r in rows)  # some brand's best view is a tile
    worker = worker_detections(bundle, urls, [image_server.host], tiles=bundle.tiles)
    assert_same_detections({(r["image"], r["brand"]): (r["score"], r["present"], r["region"])
                            for r in rows}, worker)
