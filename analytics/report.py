"""The brand report: image vs text mentions over a period, as a table, PNG charts and HTML.

It reads only the views (so it runs as ``logowatch_reader`` and shows the numbers the
dashboards show) and is meant for the marketer without a dashboard: one command, one folder
to mail around. The page is ``templates/report.html``, rendered by Jinja2 with autoescaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, text

from analytics.errors import AnalyticsError

TOP_N = 10
GRID_DAYS = 3 * 366  # periods up to this long are drawn day by day, empty days included
CHARTS = ("daily_mentions.png", "image_only_share.png", "top_accounts.png")


def parse_since(value: str, today: date | None = None) -> date:
    """First day of the period: ``30d`` / ``4w`` (counting today) or an ISO date."""
    today = today or datetime.now(UTC).date()
    match = re.fullmatch(r"\s*(\d+)\s*([dw])\s*", value.lower())
    if match:
        n = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
        if n < 1:
            raise AnalyticsError(f"--since {value!r}: the period must be at least one day")
        return today - timedelta(days=n - 1)
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise AnalyticsError(f"--since {value!r}: expected e.g. 30d, 4w or 2026-03-01") \
            from None


@dataclass
class Day:
    day: date
    posts: int = 0
    image_hits: int = 0
    text_hits: int = 0
    both_hits: int = 0
    image_only: int = 0
    text_only: int = 0

    @property
    def image_only_share(self) -> float | None:
        return self.image_only / self.image_hits if self.image_hits else None


@dataclass
class Account:
    author: str
    image_only_posts: int
    both_posts: int
    text_only_posts: int


@dataclass
class ModelInfo:
    """The brand's current model; ``trained_at``, ``weights`` and ``random_weights`` are None
    for a model registered before its provenance was recorded (migration 0009)."""

    version: str
    backbone: str
    pinned: bool
    trained_at: datetime | None  # UTC
    weights: str | None
    random_weights: bool | None

    def describe(self) -> str:
        trained = f"{self.trained_at:%Y-%m-%d}" if self.trained_at else "unknown"
        return f"{self.version} (trained {trained}, weights {self.weights or 'unknown'})"


@dataclass
class BrandReport:
    brand: str
    since: date
    until: date
    model: ModelInfo | None
    days: list[Day]
    accounts: list[Account] = field(default_factory=list)
    hashtags: list[tuple[str, int]] = field(default_factory=list)
    display_name: str | None = None  # the catalogue's; None for a brand only a model knows

    @property
    def name(self) -> str:
        """How people read the brand: its display name, else the head's name."""
        return self.display_name or self.brand

    @property
    def total(self) -> Day:
        total = Day(self.until)
        for d in self.days:
            for name in ("posts", "image_hits", "text_hits", "both_hits", "image_only",
                         "text_only"):
                setattr(total, name, getattr(total, name) + getattr(d, name))
        return total


def load(conn: Connection, brand: str, since: date, until: date) -> BrandReport:
    """Read the period from the views; every day of a period shorter than ``GRID_DAYS``
    appears, zeros included."""
    if until < since:
        raise AnalyticsError(f"--until {until} is before --since {since}")
    known = dict(conn.execute(text(
        "SELECT brand, max(display_name) FROM (SELECT brand, display_name FROM brand_catalogue "
        "UNION ALL SELECT brand, NULL FROM brand_current_model) b GROUP BY brand")).all())
    if brand not in known:
        names = ", ".join(sorted(known)) or "none; add one with: logowatch brands add"
        raise AnalyticsError(f"unknown brand {brand!r} (known: {names})")
    period = {"b": brand, "s": since, "u": until}
    row = conn.execute(text(
        "SELECT m.model_version, m.backbone, m.pinned, p.trained_at AT TIME ZONE 'UTC', "
        "p.weights, p.random_weights FROM brand_current_model m "
        "JOIN model_provenance p USING (model_version) WHERE m.brand = :b"), period).first()
    model = ModelInfo(*row) if row else None
    first, last = conn.execute(text(
        "SELECT min(day), max(day) FROM brand_daily WHERE brand = :b AND day BETWEEN :s AND :u"
    ), period).one()
    if (until - since).days >= GRID_DAYS and first is not None:
        since, until = first, last  # a long period shows the span of its data
    by_day = {day: Day(day) for day in _grid(since, until)}
    for row in conn.execute(text(
        "SELECT day, posts, image_hits, text_hits, both_hits, image_only, text_only "
        "FROM brand_daily WHERE brand = :b AND day BETWEEN :s AND :u"), period):
        by_day[row.day] = Day(*row)
    accounts = [Account(*row) for row in conn.execute(text(
        "SELECT author, sum(image_only_posts), sum(both_posts), sum(text_only_posts) "
        "FROM brand_top_accounts WHERE brand = :b AND day BETWEEN :s AND :u "
        "GROUP BY author ORDER BY 2 DESC, 3 DESC, 4 DESC, author "
        f"LIMIT {TOP_N}"), period)]
    hashtags = [(tag, int(n)) for tag, n in conn.execute(text(
        "SELECT hashtag, sum(posts) FROM brand_hashtags_image_only "
        "WHERE brand = :b AND day BETWEEN :s AND :u "
        f"GROUP BY hashtag ORDER BY 2 DESC, hashtag LIMIT {TOP_N}"), period)]
    return BrandReport(brand, since, until, model, sorted(by_day.values(), key=lambda d: d.day),
                       accounts, hashtags, known[brand])


def _grid(since: date, until: date) -> list[date]:
    """The days shown (as zeros when nothing was posted): every day of a period shorter than
    ``GRID_DAYS``; of a longer one, only the days with mentions, so a stray post dated year 1
    never makes a grid of 700,000 days."""
    span = (until - since).days
    return [since + timedelta(days=i) for i in range(span + 1)] if span < GRID_DAYS else []


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def render_table(report: BrandReport) -> str:
    """The plain-text summary the command prints."""
    model = report.model
    head = (f"{report.name}: {report.since} .. {report.until}, model "
            f"{model.describe() if model else '(none: text mentions only)'}")
    if model and model.random_weights:
        head += "\nWARNING: this model runs on random weights; its image numbers mean nothing"
    cols = f"{'day':<10}  {'posts':>5}  {'image':>5}  {'text':>5}  {'both':>5}  " \
           f"{'img-only':>8}  {'txt-only':>8}  {'img-only share':>14}"
    lines = [head, "", cols, "-" * len(cols)]
    rows = [(str(d.day), d) for d in report.days if d.posts] + [("total", report.total)]
    for label, d in rows:
        lines.append(f"{label:<10}  {d.posts:>5}  {d.image_hits:>5}  {d.text_hits:>5}  "
                     f"{d.both_hits:>5}  {d.image_only:>8}  {d.text_only:>8}  "
                     f"{_share(d.image_only_share):>14}")
    if report.accounts:
        lines += ["", "top accounts (image-only / both / text-only posts)"]
        lines += [f"  {a.author:<30} {a.image_only_posts:>5} {a.both_posts:>5} "
                  f"{a.text_only_posts:>5}" for a in report.accounts]
    if report.hashtags:
        lines += ["", "hashtags on image-only posts"]
        lines += [f"  #{tag:<29} {n:>5}" for tag, n in report.hashtags]
    return "\n".join(lines)


def write_charts(report: BrandReport, out: Path) -> list[Path]:
    """Three PNGs and ``index.html`` embedding them; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    out.mkdir(parents=True, exist_ok=True)
    days = [d.day for d in report.days]
    written: list[Path] = []

    def save(fig: object, name: str) -> None:
        path = out / name
        fig.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        written.append(path)

    def dated(ax: object) -> None:
        # Matplotlib's dates stop at years 1 and 9999: keep the autoscale margins inside.
        low, high = ax.get_xlim()  # type: ignore[attr-defined]
        ax.set_xlim(max(low, date2num(date(1, 1, 1))),  # type: ignore[attr-defined]
                    min(high, date2num(date(9999, 12, 31))))
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)  # type: ignore[attr-defined]
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[attr-defined]
        ax.grid(alpha=0.3)  # type: ignore[attr-defined]

    fig, ax = plt.subplots(figsize=(9, 4))
    # Wide line under a narrow one, so equal counts still show both series.
    ax.plot(days, [d.image_hits for d in report.days], marker="o", linewidth=4, alpha=0.6,
            markersize=9, label="in image")
    ax.plot(days, [d.text_hits for d in report.days], marker="s", label="in text")
    # "both" is never above the others: drawn last, dotted, with its own marker and not
    # clipped, so it shows where it equals another series and on the axis at zero.
    ax.plot(days, [d.both_hits for d in report.days], linestyle=":", linewidth=2,
            marker="D", markersize=5, color="black", zorder=3, clip_on=False, label="both")
    ax.set_title(f"{report.name}: posts per day, seen in the image vs said in text")
    ax.set_ylabel("posts")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    dated(ax)
    save(fig, CHARTS[0])

    fig, ax = plt.subplots(figsize=(9, 4))
    shares = [d.image_only_share for d in report.days]
    ax.bar(days, [s or 0 for s in shares], color="tab:orange")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title(f"{report.name}: share of image hits never named in text "
                 f"(period: {_share(report.total.image_only_share)})")
    ax.set_ylabel("image-only share")
    dated(ax)
    save(fig, CHARTS[1])

    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.45 * len(report.accounts) + 1)))
    accounts = list(reversed(report.accounts))
    names = [a.author for a in accounts]
    image_only = [a.image_only_posts for a in accounts]
    both = [a.both_posts for a in accounts]
    ax.barh(names, image_only, label="image only")
    ax.barh(names, both, left=image_only, label="image and text")
    ax.barh(names, [a.text_only_posts for a in accounts],
            left=[i + b for i, b in zip(image_only, both, strict=True)], label="text only")
    ax.set_title(f"{report.name}: top accounts by image-only posts")
    ax.set_xlabel("posts")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not accounts:
        ax.text(0.5, 0.5, "no mentions in this period", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.legend(loc="lower right")
    save(fig, CHARTS[2])

    index = out / "index.html"
    index.write_text(render_html(report), encoding="utf-8")
    written.append(index)
    return written


def render_html(report: BrandReport) -> str:
    """The page: model provenance, the daily numbers and the top lists as tables, the charts."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("analytics"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html").render(
        report=report, model=report.model, total=report.total, share=_share,
        title=f"{report.name} — {report.since} to {report.until}",
        days=[d for d in report.days if d.posts],
        charts=[(name, name[:-4].replace("_", " ")) for name in CHARTS],
        generated=datetime.now(UTC))
