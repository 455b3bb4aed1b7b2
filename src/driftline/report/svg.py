"""Inline SVG charts of a model report: no scripts, no fonts or images from elsewhere.

Every chart is an ``<svg>`` with a ``viewBox`` drawn at ``WIDTH`` units and scaled to the page
width by CSS, so the page reads the same on a laptop and a wide screen.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

WIDTH = 1000
LEFT = 130  # room for feature names
RIGHT = 20
PSI_MAX = 1.0  # colour scale cap; larger PSIs show as the darkest colour
MAX_COLUMNS = 240  # more windows than this are merged, a column per run of consecutive windows
VERSION_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
TRIGGER_COLOUR = "#d62728"
# Sequential palette from no shift (pale) to a large one (dark), interpolated in RGB.
_PSI_STOPS = (
    (0.0, (255, 247, 236)),
    (0.1, (253, 212, 158)),
    (0.25, (252, 141, 89)),
    (0.5, (215, 48, 31)),
    (1.0, (127, 0, 0)),
)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def psi_colour(psi: float | None) -> str:
    """The heat map colour of a PSI (grey when the window has none).

    >>> psi_colour(0.0), psi_colour(5.0), psi_colour(None)
    ('#fff7ec', '#7f0000', '#dddddd')
    """
    if psi is None:
        return "#dddddd"
    x = min(max(psi, 0.0), PSI_MAX) / PSI_MAX
    for (x0, c0), (x1, c1) in itertools.pairwise(_PSI_STOPS):
        if x <= x1:
            t = (x - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(c0, c1, strict=True))
    return "#7f0000"


def version_colour(index: int) -> str:
    return VERSION_COLOURS[index % len(VERSION_COLOURS)]


def time_label(ms: int, span_ms: int) -> str:
    """A tick label: the time of day within two days, else the date and time.

    >>> time_label(1_700_000_000_000, 3_600_000), time_label(1_700_000_000_000, 7 * 86_400_000)
    ('22:13', '11-14 22:13')
    """
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%H:%M" if span_ms <= 2 * 86_400_000 else "%m-%d %H:%M")


def _nice_ticks(lo: int, hi: int, count: int = 8) -> list[int]:
    """At most about ``count`` round tick times in [lo, hi] (multiples of a minute, an hour, a day ...).

    >>> [t // 60_000 for t in _nice_ticks(0, 3_600_000)]
    [0, 10, 20, 30, 40, 50, 60]
    >>> len(_nice_ticks(0, 50 * 365 * 86_400_000)) <= 9
    True
    """
    steps = [s * 1000 for s in (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                                43200, 86400, 172800, 604800)]
    span = max(hi - lo, 1)
    step = next((s for s in steps if span / s <= count), math.ceil(span / count / steps[-1]) * steps[-1])
    first = lo + (-lo) % step
    return list(range(first, hi + 1, step))


@dataclass(frozen=True)
class HeatCell:
    """One heat map cell: a feature over one window, or over a run of merged windows."""

    feature: str
    start_ms: int
    end_ms: int
    psi: float | None  # largest PSI of the merged windows
    drifted: int  # windows judged drifted
    windows: int  # windows merged into the cell
    detail: str  # tooltip text


def heatmap(
    title: str,
    features: Sequence[str],
    columns: Sequence[tuple[int, int]],
    cells: Sequence[HeatCell],
    model_drifted: Sequence[int] | None = None,
    marks: Sequence[tuple[int, str]] = (),
) -> str:
    """Features (rows) by windows (columns), coloured by PSI; a dot marks a drifted verdict.

    ``columns`` are the (start, end) of each column, ``model_drifted`` (optional) the columns the
    model-level verdict called drifted (a strip above the grid); ``marks`` are labelled times.
    """
    row_h, top = 18, 42
    strip = 12 if model_drifted is not None else 0
    grid_top = top + strip + (4 if strip else 0)
    height = grid_top + row_h * len(features) + 34
    col_w = (WIDTH - LEFT - RIGHT) / max(len(columns), 1)
    col_of = {start: i for i, (start, _) in enumerate(columns)}
    row_of = {f: i for i, f in enumerate(features)}
    out = [
        f'<svg class="chart heatmap" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{LEFT}" y="16" class="title">{esc(title)}</text>',
        f'<text x="{LEFT}" y="32" class="note">colour: PSI (capped at {PSI_MAX:g}); dot: drifted '
        f"verdict{'; top strip: model-level verdict' if strip else ''}; grey: no score</text>",
    ]
    for i, psi in enumerate((0.0, 0.1, 0.25, 0.5, 1.0)):  # the colour scale's key, top right
        key_x = WIDTH - RIGHT - 5 * 44 + i * 44
        out.append(f'<rect x="{key_x}" y="6" width="14" height="10" fill="{psi_colour(psi)}" stroke="#999" '
                   f'stroke-width="0.5"/><text x="{key_x + 17}" y="15" class="tick">{psi:g}</text>')
    if model_drifted is not None:
        out.append(f'<text x="{LEFT - 6}" y="{top + strip - 2}" class="label" text-anchor="end">model</text>')
        for i, n in enumerate(model_drifted):
            fill = TRIGGER_COLOUR if n else "#e8e8e8"
            out.append(
                f'<rect class="model-cell" x="{LEFT + i * col_w:.2f}" y="{top}" width="{col_w:.2f}" '
                f'height="{strip}" fill="{fill}" data-drifted="{n}"/>'
            )
    for feature, i in row_of.items():
        out.append(
            f'<text x="{LEFT - 6}" y="{grid_top + i * row_h + 13}" class="label" '
            f'text-anchor="end">{esc(feature)}</text>'
        )
    for cell in cells:
        x, y = LEFT + col_of[cell.start_ms] * col_w, grid_top + row_of[cell.feature] * row_h
        out.append(
            f'<rect class="cell" x="{x:.2f}" y="{y}" width="{col_w:.2f}" height="{row_h - 1}" '
            f'fill="{psi_colour(cell.psi)}" data-feature="{esc(cell.feature)}" data-start="{cell.start_ms}" '
            f'data-psi="{"" if cell.psi is None else f"{cell.psi:.6g}"}" data-drifted="{cell.drifted}" '
            f'data-windows="{cell.windows}"><title>{esc(cell.detail)}</title></rect>'
        )
        if cell.drifted:
            radius = min(4.0, col_w / 2.5)
            out.append(
                f'<circle class="verdict" cx="{x + col_w / 2:.2f}" cy="{y + row_h / 2 - 0.5}" '
                f'r="{radius:.2f}" fill="#0b63c4"/>'
            )
    bottom = grid_top + row_h * len(features)
    if columns:
        lo, hi = columns[0][0], columns[-1][1]
        out.extend(_time_axis(lo, hi, bottom, LEFT, WIDTH - RIGHT))
        scale = (WIDTH - LEFT - RIGHT) / max(hi - lo, 1)
        for at, label in marks:
            if lo <= at <= hi:
                x = LEFT + (at - lo) * scale
                out.append(
                    f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{grid_top}" y2="{bottom}" class="mark"/>'
                    f'<text x="{x + 3:.1f}" y="{grid_top - 3}" class="mark-label">{esc(label)}</text>'
                )
    out.append("</svg>")
    return "".join(out)


def _time_axis(lo: int, hi: int, y: float, x0: float, x1: float) -> list[str]:
    scale = (x1 - x0) / max(hi - lo, 1)
    parts = [f'<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" class="axis"/>']
    for tick in _nice_ticks(lo, hi):
        x = x0 + (tick - lo) * scale
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 4}" class="axis"/>'
            f'<text x="{x:.1f}" y="{y + 16}" class="tick" text-anchor="middle">'
            f"{time_label(tick, hi - lo)}</text>"
        )
    parts.append(f'<text x="{x1}" y="{y + 30}" class="note" text-anchor="end">UTC event time</text>')
    return parts


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    points: Sequence[tuple[int, float]]
    markers: Sequence[int] = ()  # times of alarms, drawn as triangles at the foot of the chart
    style: str = ""  # "dashed" (a threshold or a band's edge) or "dotted"; solid by default


def line_chart(
    title: str,
    y_label: str,
    series: Sequence[Series],
    triggers: Sequence[tuple[int, str]] = (),
    marks: Sequence[tuple[int, str]] = (),
    y_max: float = 1.0,
) -> str:
    """Lines over time on [0, y_max]; ``triggers`` as red verticals labelled with their reasons."""
    height, top, plot_h = 300, 44, 200
    bottom = top + plot_h
    times = [t for s in series for t, _ in s.points] + [t for s in series for t in s.markers]
    times += [t for t, _ in triggers] + [t for t, _ in marks]
    if not times:
        return ""
    lo, hi = min(times), max(times)
    if hi == lo:
        lo, hi = lo - 60_000, hi + 60_000
    x0, x1 = 60, WIDTH - RIGHT
    sx = (x1 - x0) / (hi - lo)

    def x(t: int) -> float:
        return x0 + (t - lo) * sx

    def y(v: float) -> float:
        return bottom - min(max(v, 0.0), y_max) / y_max * plot_h

    out = [
        f'<svg class="chart lines" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{esc(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{x0}" y="16" class="title">{esc(title)}</text>',
    ]
    for i in range(5):
        v = y_max * i / 4
        out.append(
            f'<line x1="{x0}" x2="{x1}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{x0 - 6}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:.2g}</text>'
        )
    out.append(
        f'<text x="14" y="{top + plot_h / 2}" class="note" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">{esc(y_label)}</text>'
    )
    for at, reason in triggers:
        out.append(
            f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{top}" y2="{bottom}" class="trigger"/>'
            f'<text x="{x(at) - 3:.1f}" y="{top + 4}" class="trigger-label" text-anchor="end" '
            f'transform="rotate(-90 {x(at) - 3:.1f} {top + 4})">{esc(reason)}</text>'
        )
    for at, label in marks:
        out.append(
            f'<line x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{top}" y2="{bottom}" class="mark"/>'
            f'<text x="{x(at) + 3:.1f}" y="{top - 4}" class="mark-label">{esc(label)}</text>'
        )
    legend_x = x0
    for s in series:
        if s.points:
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for i, (t, v) in enumerate(s.points)
            )
            css = f"series {s.style}".rstrip()
            out.append(f'<path d="{path}" class="{css}" stroke="{s.colour}" data-series="{esc(s.name)}"/>')
            if len(s.points) == 1:
                t, v = s.points[0]
                out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{s.colour}"/>')
        for at in s.markers:
            out.append(
                f'<path d="M{x(at):.1f},{bottom - 11} l5,9 h-10 z" fill="{s.colour}" class="alarm">'
                f"<title>{esc(s.name)} detector alarm at {time_label(at, 0)} UTC</title></path>"
            )
        swatch = (
            f'<line x1="{legend_x}" x2="{legend_x + 12}" y1="{height - 12}" y2="{height - 12}" '
            f'class="series {s.style}" stroke="{s.colour}"/>'
            if s.style
            else f'<rect x="{legend_x}" y="{height - 14}" width="12" height="4" fill="{s.colour}"/>'
        )
        out.append(swatch + f'<text x="{legend_x + 16}" y="{height - 9}" class="tick">{esc(s.name)}</text>')
        legend_x += 16 + 7 * len(s.name) + 24
    if any(s.markers for s in series):
        out.append(
            f'<path d="M{legend_x + 5},{height - 19} l5,9 h-10 z" fill="#555"/>'
            f'<text x="{legend_x + 16}" y="{height - 9}" class="tick">detector alarm</text>'
        )
        legend_x += 130
    if triggers:
        out.append(
            f'<line x1="{legend_x}" x2="{legend_x + 12}" y1="{height - 12}" y2="{height - 12}" '
            f'class="trigger"/><text x="{legend_x + 16}" y="{height - 9}" class="tick">retrain trigger '
            "(reason)</text>"
        )
    out.extend(_time_axis(lo, hi, bottom, x0, x1)[:-1])
    out.append("</svg>")
    return "".join(out)


@dataclass(frozen=True)
class Span:
    """One episode on the timeline."""

    row: str  # e.g. "v1 x3"
    start_ms: int
    end_ms: int
    open: bool
    colour: str
    detail: str


def timeline(title: str, spans: Sequence[Span], lo: int, hi: int) -> str:
    """Episodes as bars per feature from opening to closing (an open one runs to its last report)."""
    rows = list(dict.fromkeys(s.row for s in spans))
    if not rows:
        return ""
    row_h, top = 20, 30
    bottom = top + row_h * len(rows)
    height = bottom + 36
    hi = max([hi, *(s.end_ms for s in spans)])
    lo = min([lo, *(s.start_ms for s in spans)])
    sx = (WIDTH - LEFT - RIGHT) / max(hi - lo, 1)
    out = [
        f'<svg class="chart timeline" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{esc(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{LEFT}" y="16" class="title">{esc(title)}</text>',
    ]
    for i, name in enumerate(rows):
        out.append(
            f'<text x="{LEFT - 6}" y="{top + i * row_h + 14}" class="label" text-anchor="end">'
            f"{esc(name)}</text>"
        )
    for s in spans:
        x = LEFT + (s.start_ms - lo) * sx
        w = max((s.end_ms - s.start_ms) * sx, 3.0)
        y = top + rows.index(s.row) * row_h + 3
        out.append(
            f'<rect class="episode" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{s.colour}" fill-opacity="{0.55 if s.open else 0.9}" data-open="{int(s.open)}">'
            f"<title>{esc(s.detail)}</title></rect>"
        )
    out.extend(_time_axis(lo, hi, bottom, LEFT, WIDTH - RIGHT))
    out.append("</svg>")
    return "".join(out)
