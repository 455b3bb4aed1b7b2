"""The demo's HTML report: one self-contained file, charts embedded as base64 PNGs.

Charts: PSI per feature and window as a heat map (drifted windows marked), accuracy over time with
detector alarms and retrain triggers, and champion vs challenger accuracy on the same requests.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from driftline.demo.summary import Row, Rows, injection_ms

PSI_MAX = 1.0  # colour scale cap; larger PSIs show as the darkest colour


def _time(ms: int) -> float:
    """An event time as a matplotlib date number."""
    return float(mdates.date2num(datetime.fromtimestamp(ms / 1000, UTC)))


def _date_axis(ax: Axes) -> None:
    ax.xaxis.set_major_locator(mdates.AutoDateLocator())
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))


def _feature_order(name: str) -> tuple[str, int, str]:
    """x2 before x10: the simulator's names sort by prefix, then number."""
    digits = name.lstrip("abcdefghijklmnopqrstuvwxyz_")
    return name[: len(name) - len(digits)], int(digits) if digits.isdigit() else -1, name


def png(fig: Figure) -> str:
    """The figure as a base64 PNG (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def heatmap(drift_rows: list[Row], model_id: str, version: str, injected: list[str],
            injected_at: int | None) -> Figure | None:
    rows = [r for r in drift_rows if (r["model_id"], r["model_version"]) == (model_id, version)]
    if not rows:
        return None
    features = sorted({str(r["feature"]) for r in rows}, key=_feature_order)
    starts = sorted({int(r["start_ms"]) for r in rows})
    col = {s: i for i, s in enumerate(starts)}
    line = {f: i for i, f in enumerate(features)}
    psi = np.full((len(features), len(starts)), np.nan)
    marks: list[tuple[int, int]] = []
    for r in rows:
        i, j = line[str(r["feature"])], col[int(r["start_ms"])]
        psi[i, j] = float(r["psi"]) if r["psi"] is not None else np.nan
        if int(r["drifted"]):
            marks.append((j, i))
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(features) + 1.6))
    image = ax.imshow(np.clip(psi, 0, PSI_MAX), aspect="auto", cmap="magma_r", vmin=0, vmax=PSI_MAX,
                      interpolation="nearest")
    if marks:
        xs, ys = zip(*marks, strict=True)
        ax.scatter(xs, ys, marker="o", s=9, color="#18a0fb", label="drifted (verdict)")
        ax.legend(loc="upper left", fontsize=8)
    if injected_at is not None and starts:
        x = np.searchsorted(starts, injected_at) - 0.5
        ax.axvline(x, color="#2ca02c", linestyle="--", linewidth=1.5)
    ax.set_yticks(range(len(features)))
    ax.set_yticklabels([f"{f} *" if f in injected else f for f in features], fontsize=8)
    step = max(1, len(starts) // 12)
    ax.set_xticks(range(0, len(starts), step))
    ax.set_xticklabels([datetime.fromtimestamp(s / 1000, UTC).strftime("%H:%M") for s in starts[::step]],
                       fontsize=8)
    ax.set_xlabel("window start (UTC event time); dashed: drift injected; * injected feature")
    ax.set_title(f"{model_id} v{version}: PSI per feature and window")
    fig.colorbar(image, ax=ax, label=f"PSI (capped at {PSI_MAX:g})", pad=0.01)
    return fig


def accuracy_chart(metric_rows: list[Row], trigger_rows: list[Row], model_id: str,
                   injected_at: int | None) -> Figure | None:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    alarms: dict[str, list[int]] = defaultdict(list)
    for r in metric_rows:
        if r["model_id"] != model_id:
            continue
        if r["row_kind"] == "alarm":
            alarms[str(r["model_version"])].append(int(r["time_ms"]))
        elif r["accuracy"] is not None:
            series[str(r["model_version"])].append((int(r["time_ms"]), float(r["accuracy"])))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(11, 3.6))
    for version, points in sorted(series.items()):
        times, values = [_time(t) for t, _ in points], [a for _, a in points]
        (drawn,) = ax.plot(times, values, label=f"v{version} accuracy")
        if alarms.get(version):
            ax.plot([_time(t) for t in alarms[version]], [0.04] * len(alarms[version]), "^", markersize=9,
                    color=drawn.get_color(), label=f"v{version} detector alarms")
    fired: dict[int, list[str]] = defaultdict(list)
    for r in trigger_rows:
        if r["model_id"] == model_id:
            fired[int(r["time_ms"])].append(f"{r['reason']} v{r['model_version']}")
    for i, (at, names) in enumerate(sorted(fired.items())):
        ax.axvline(_time(at), color="#d62728", linewidth=1.2, label="retrain trigger" if i == 0 else None)
        ax.annotate(", ".join(names), (_time(at), 0.97), fontsize=7, rotation=90, va="top", ha="right",
                    color="#d62728")
    if injected_at is not None:
        ax.axvline(_time(injected_at), color="#2ca02c", linestyle="--", label="drift injected")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy per interval")
    _date_axis(ax)
    ax.set_title(f"{model_id}: accuracy over time (label time), alarms and retrain triggers")
    ax.legend(loc="lower left", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    return fig


def head_to_head_chart(rows: list[Row], model_id: str, roles: dict[str, str],
                       injected_at: int | None) -> Figure | None:
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r["model_id"] == model_id and r["accuracy"] is not None:
            series[str(r["model_version"])].append((int(r["time_ms"]), float(r["accuracy"])))
    if len(series) < 2:
        return None
    fig, ax = plt.subplots(figsize=(11, 3.4))
    for version, points in sorted(series.items()):
        label = f"v{version} ({roles.get(version, '?')})"
        ax.plot([_time(t) for t, _ in points], [a for _, a in points], marker=".", label=label)
    if injected_at is not None:
        ax.axvline(_time(injected_at), color="#2ca02c", linestyle="--", label="drift injected")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy, same requests")
    _date_axis(ax)
    ax.set_title(f"{model_id}: champion vs challenger on the same requests (prediction time)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(title: str, fig: Figure | None) -> str:
    if fig is None:
        return ""
    return (f"<figure><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{png(fig)}\">"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1180px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
figcaption { color: #666; font-size: 0.85em; }
"""


def render_html(summary: dict[str, Any], truth: dict[str, Any], rows: Rows) -> str:
    """The report page for a summary (``build_summary``), its ground truth and its rows."""
    models = summary["models"]
    table = _table(
        ["model", "version", "role", "injected drift", "detected drift (windows)", "first detection",
         "drift episodes (features)", "first episode", "error episodes", "accuracy before", "accuracy after",
         "alarms", "triggers", "jobs succeeded"],
        [[m["model_id"], m["model_version"], m["role"], ", ".join(m["injected_drift"]) or "-",
          ", ".join(m["detected_drift"]) or "-", m["first_detection"] or "-",
          ", ".join(m.get("episode_features", [])) or "-", m.get("first_episode") or "-",
          m.get("error_episodes", 0), m["accuracy_before"],
          m["accuracy_after"], m["detector_alarms"], m["retrain_triggers"], m["retrain_jobs_succeeded"]]
         for m in models],
    )
    dead = _table(["kind", "dead letters"], [[k, n] for k, n in summary["dead_letters"].items()])
    intro = (f"<h1>driftline demo report</h1><p>Drift injected at {summary['injection_time']} (event time). "
             f"Late events: {summary['late_events']}.</p>")
    sections = [intro, table, "<h2>Dead letters</h2>", dead]
    for model_id, model in truth["models"].items():
        injection = injection_ms(model)
        roles = {m["model_version"]: m["role"] for m in models if m["model_id"] == model_id}
        sections.append(f"<h2>{html.escape(model_id)}</h2>")
        for version in roles:
            injected = [d["feature"] for d in model["covariate_drift"]]
            sections.append(_figure(f"{model_id} v{version}: PSI heat map",
                                    heatmap(rows["drift"], model_id, version, injected, injection)))
        sections.append(_figure(f"{model_id}: accuracy, alarms and triggers",
                                accuracy_chart(rows["metrics"], rows["triggers"], model_id, injection)))
        sections.append(_figure(f"{model_id}: champion vs challenger",
                                head_to_head_chart(rows["head_to_head"], model_id, roles, injection)))
    body = "\n".join(s for s in sections if s)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>driftline demo report</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def write_report(path: Path, summary: dict[str, Any], truth: dict[str, Any], rows: Rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(summary, truth, rows), encoding="utf-8")
    return path
