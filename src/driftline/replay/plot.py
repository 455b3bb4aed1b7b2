"""The backtest picture: per model, drift score over time for each run, alarms and incidents.

The score per window is the max PSI over features (``metric='psi'``) or the number of drifted
features (``'n_drifted'``). Drift alarms are marked on the run's line; detector alarms and
retrain triggers as ticks along the bottom; incidents as shaded spans. PNG via matplotlib's Agg
backend; HTML is a self-contained page with the PNG embedded (base64).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from driftline.replay.backtest import Alarm, WindowRow
from driftline.replay.incidents import NEVER, Incident

METRICS = ("psi", "n_drifted")
_MARKERS = {"performance": "v", "trigger": "*"}


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def render_png(windows: Sequence[WindowRow], alarms: Sequence[Alarm], incidents: Sequence[Incident],
               run_ids: Sequence[str], metric: str = "psi") -> bytes:
    """The figure as PNG bytes."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    models = sorted({w.model_id for w in windows} | {a.model_id for a in alarms})
    fig = Figure(figsize=(11, 3.2 * max(len(models), 1)), layout="constrained")
    axes = fig.subplots(max(len(models), 1), 1, squeeze=False)[:, 0]
    end = max((w.window_end for w in windows), default=0)
    for ax, model_id in zip(axes, models, strict=False):
        for incident in (i for i in incidents if i.model_id == model_id):
            stop = incident.end_ms if incident.end_ms != NEVER else max(end, incident.start_ms)
            ax.axvspan(_dt(incident.start_ms), _dt(stop), color="tab:red", alpha=0.12,
                       label="incident")
        for n, run_id in enumerate(run_ids):
            color = f"C{n}"
            mine = sorted((w for w in windows if w.run_id == run_id and w.model_id == model_id),
                          key=lambda w: (w.window_end, w.model_version))
            values = [(w.max_psi if metric == "psi" else float(w.n_drifted)) for w in mine]
            ax.plot([_dt(w.window_end) for w in mine], [v if v is not None else float("nan") for v in values],
                    color=color, drawstyle="steps-pre", label=f"{run_id}: {metric} per window")
            hits = [(w, v) for w, v in zip(mine, values, strict=True) if w.drifted and v is not None]
            ax.scatter([_dt(w.window_end) for w, _ in hits], [v for _, v in hits], color=color,
                       marker="o", zorder=3, label=f"{run_id}: drift alarm")
            for kind, marker in _MARKERS.items():
                times = [_dt(a.time_ms) for a in alarms
                         if a.run_id == run_id and a.model_id == model_id and a.kind == kind]
                if times:
                    ax.plot(times, [0.0] * len(times), linestyle="none", marker=marker, color=color,
                            markersize=9, transform=ax.get_xaxis_transform(), clip_on=False,
                            label=f"{run_id}: {kind} alarm")
        ax.set_title(model_id)
        ax.set_ylabel("max PSI over features" if metric == "psi" else "drifted features")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        if unique:
            ax.legend(unique.values(), unique.keys(), fontsize="small", loc="upper left")
    axes[-1].set_xlabel("window end (UTC event time)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def html_page(png: bytes, title: str) -> str:
    """A self-contained HTML page showing ``png``."""
    data = base64.b64encode(png).decode()
    escaped = html.escape(title)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{escaped}</title></head>\n"
            f"<body><h1>{escaped}</h1>\n<img alt=\"{escaped}\" src=\"data:image/png;base64,{data}\">\n"
            "</body></html>\n")


def write_plot(path: Path, png: bytes, title: str) -> None:
    """PNG for ``.png``, the HTML page for ``.html``/``.htm``."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(png)
    elif suffix in (".html", ".htm"):
        path.write_text(html_page(png, title))
    else:
        raise ValueError(f"{path}: the plot is written as .png or .html")
