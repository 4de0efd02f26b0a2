"""The brands and report commands against a real, migrated and seeded database."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from analytics.report import CHARTS
from logowatch.cli import main
from tests.integration.analytics_seed import seed
from workers.sink import ResultWriter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db(migrated_db: str) -> str:
    seed(migrated_db)
    return migrated_db


def test_brands_add_list_pin_and_remove(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["brands", "add", "Rolex", "--database-url", db]) == 0
    assert main(["brands", "add", "Rolex", "--word", "Oyster Perpetual", "--database-url", db]) \
        == 0
    assert main(["brands", "pin", "nike", "m1", "--database-url", db]) == 0
    capsys.readouterr()
    assert main(["brands", "list", "--database-url", db]) == 0
    listing = capsys.readouterr().out
    assert "#Rolex @Rolex Oyster Perpetual Rolex" in listing
    assert "m1 (pinned)" in listing and "adidas" in listing
    assert main(["brands", "unpin", "nike", "--database-url", db]) == 0
    assert main(["brands", "remove", "Rolex", "--database-url", db]) == 0
    assert main(["brands", "remove", "Rolex", "--database-url", db]) == 1
    assert "no brand 'Rolex'" in capsys.readouterr().err


def test_brands_pin_refuses_a_model_without_the_brand(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["brands", "pin", "nike", "m2", "--database-url", db]) == 1
    assert "has no head for brand 'nike'" in capsys.readouterr().err


def test_brands_load_replaces_the_aliases_of_the_brands_in_the_file(
    db: str, tmp_path: Path
) -> None:
    path = tmp_path / "brands.yaml"
    path.write_text("brands:\n  thenorthface:\n    display_name: The North Face\n"
                    "    words: [north face]\n    handles: ['@thenorthface']\n")
    assert main(["brands", "load", str(path), "--database-url", db]) == 0
    with create_engine(db).connect() as conn:
        got = set(conn.execute(text("SELECT display_name, kind, alias FROM brand_catalogue "
                                    "WHERE brand = 'thenorthface'")).all())
    assert got == {("The North Face", "word", "north face"),
                   ("The North Face", "mention", "thenorthface")}


def test_report_as_the_reader_prints_the_table_and_writes_valid_charts(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main(["report", "--brand", "patagonia", "--since", "2026-03-01",
                 "--until", "2026-03-03", "--out", str(out), "--database-url", _reader(db)]) == 0
    table = capsys.readouterr().out
    assert "2026-03-01      5      3      3      1         2         2             67%" in table
    assert "total           7      4      4      1         3         3             75%" in table
    assert "alice" in table and "#climbing" in table
    for name in CHARTS:
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 400
    page = (out / "index.html").read_text()
    assert all(f'src="{name}"' in page for name in CHARTS)
    assert ('<tr><td>2026-03-01</td><td class="n">5</td><td class="n">3</td>\n'
            '<td class="n">3</td><td class="n">1</td>') in page
    assert '<tfoot><tr><th>total</th><td class="n">7</td>' in page
    assert "<tr><td>#climbing</td>" in page
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "img{max-width:100%" in style and "{{" not in style and "}}" not in style


@pytest.mark.parametrize(("since", "until", "shown"), [
    ("0001-01-01", "2026-12-31", "0001-01-01 .. 2026-03-02"),
    ("1900-01-01", "2026-12-31", "2026-03-01 .. 2026-03-02"),
    ("1900-01-01", "1950-01-01", "1900-01-01 .. 1950-01-01"),  # no data: nothing to plot
])
def test_report_over_centuries_with_a_post_dated_year_one_shows_the_span_of_the_data(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], since: str, until: str,
    shown: str,
) -> None:
    with create_engine(db).begin() as conn:
        conn.execute(text(
            "INSERT INTO posts (post_id, source, caption, image_url, posted_at) VALUES "
            "('year-one', 'test', 'patagonia', 'http://x/1.jpg', '0001-01-01T12:00:00Z') "
            "ON CONFLICT DO NOTHING"))
    out = tmp_path / "report"
    assert main(["report", "--brand", "patagonia", "--since", since, "--until", until,
                 "--out", str(out), "--database-url", db]) == 0
    assert capsys.readouterr().out.startswith(f"patagonia: {shown}")
    for name in CHARTS:
        with Image.open(out / name) as image:
            image.verify()


def test_report_names_the_brand_by_its_display_name(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["brands", "add", "thenorthface", "--display-name", "The North Face & Co",
                 "--database-url", db]) == 0
    out = tmp_path / "report"
    assert main(["report", "--brand", "thenorthface", "--since", "2026-03-01", "--until",
                 "2026-03-03", "--out", str(out), "--database-url", db]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("The North Face & Co: 2026-03-01")
    assert "<h1>The North Face &amp; Co — 2026-03-01 to 2026-03-03</h1>" in \
        (out / "index.html").read_text()


def _reader(db: str) -> str:
    return make_url(db).set(username="logowatch_reader").render_as_string(hide_password=False)


def test_report_shows_the_models_training_date_and_weights_and_warns_when_random(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = ResultWriter(db)  # registered as a worker does, with a bundle's metadata
    writer.register_model("m-random", "inception_v3@75", {"zara": 0.5}, {
        "created_at": "2026-11-01T09:30:00+00:00", "metrics": {},
        "backbone": {"weights": "random(seed=0)", "random_weights": True}})
    writer.write([], [], [])
    writer.engine.dispose()
    for brand, expected in [
        ("zara", ("<dd>2026-11-01 09:30 UTC</dd>", "<dd>random(seed=0)</dd>",
                  "runs on random backbone\nweights")),
        ("patagonia", ("<dt>trained</dt><dd>unknown</dd>",
                       "<dt>backbone weights</dt><dd>unknown</dd>", "are\nunknown")),
    ]:
        out = tmp_path / brand
        assert main(["report", "--brand", brand, "--since", "2026-03-01", "--until",
                     "2026-03-03", "--out", str(out), "--database-url", _reader(db)]) == 0
        page = (out / "index.html").read_text()
        assert all(text in page for text in expected), page
        assert '<p class="warning" role="alert">' in page
    table = capsys.readouterr().out
    assert "model m-random (trained 2026-11-01, weights random(seed=0))\nWARNING" in table
    assert "model m2 (trained unknown, weights unknown)" in table


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("no chromium on PATH: scripts/bootstrap.sh installs it")
    return found


@pytest.mark.parametrize("width", [600, 1280])
def test_report_in_headless_chromium_fits_the_window_without_horizontal_scrolling(
    db: str, tmp_path: Path, width: int
) -> None:
    out = tmp_path / "report"
    assert main(["report", "--brand", "patagonia", "--since", "2026-02-20", "--until",
                 "2026-03-10", "--out", str(out), "--database-url", _reader(db)]) == 0
    # The page measures itself once everything (the charts too) has loaded.
    probe = ('<script>addEventListener("load", () => { document.title = JSON.stringify('
             '{scroll: document.documentElement.scrollWidth, inner: innerWidth}) })</script>')
    page = (out / "index.html").read_text()
    (out / "probe.html").write_text(page.replace("</body>", probe + "</body>"))
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}",  # never another Chromium's profile
             f"--window-size={width},2400", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", (out / "probe.html").as_uri()], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    measured = json.loads(re.search(r"<title>(.*?)</title>", dom).group(1))  # type: ignore[union-attr]
    assert measured["inner"] == width
    assert measured["scroll"] <= width, f"the page is {measured['scroll']} px wide at {width}"
    shot = tmp_path / f"report-{width}.png"
    subprocess.run([*flags, f"--screenshot={shot}", (out / "index.html").as_uri()],
                   check=True, capture_output=True, timeout=300)
    with Image.open(shot) as image:
        assert image.size == (width, 2400)


def test_report_on_an_unknown_brand_fails_in_one_line(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--brand", "acme", "--database-url", db]) == 1
    err = capsys.readouterr().err
    assert "unknown brand 'acme' (known: adidas, nike, patagonia" in err and "Traceback" not in err


def test_commands_fail_in_one_line_when_the_database_is_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+psycopg2://u@127.0.0.1:1/none"
    assert main(["forget", "--post", "x", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the database" in err and "Traceback" not in err
