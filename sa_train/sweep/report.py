"""The ablation report: one row per trial, shaped like the paper's ablation tables.

    | trial | text_encoder.kind | FD (spectral) | KL synth_kind (ref||gen) | CLAP score | timing MAE (s) | loss | status |

Written as Markdown (for people) and CSV (every metric, for tools), with a PNG bar chart per
headline metric, into ``<sweep folder>/report``. Rows come from Tune's experiment state, so a
finished sweep can be reported again without running anything (`sa-train sweep --report-only`).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from sa_train.sweep.space import SearchDimension, column_labels
from sa_train.sweep.trial import FINISHED_KEY, INFO_KEYS

MARKDOWN = "ablation.md"
CSV = "ablation.csv"
FINISHED, FAILED, STOPPED, UNFINISHED = "finished", "failed", "stopped early", "unfinished"
_COUNTS = ("fd_num_", "kl_num_")  # how many frames / clips a figure is over, not a figure to rank by
# Counted by the evaluation where clips stop at their requested length: their timing cannot fail.
UNMEASURABLE_TIMING = "timing_num_unmeasurable"
NOT_MEASURABLE = "n/a"
_NOT_METRICS = {"done", "trial_id", "experiment_tag", "checkpoint_path", "samples_seen", FINISHED_KEY, *INFO_KEYS}


@dataclass
class TrialRow:
    """One trial as the report shows it."""

    trial_id: str
    status: str  # finished | failed | stopped early | unfinished
    values: dict[str, Any]  # dotted config key -> the value this trial used
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)  # run_name, mlflow_run_id, exported, run_dir
    error: str = ""


def _status(tune_status: str, result: dict) -> str:
    if tune_status == "ERROR":
        return FAILED
    if result.get(FINISHED_KEY):
        return FINISHED
    return STOPPED if tune_status == "TERMINATED" else UNFINISHED


def _last_error_line(text: Optional[str], limit: int = 400) -> str:
    """The last line of a trial's traceback: the exception and its message (Ray may cut it short)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    if not re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line):
        line = "..." + line  # Ray truncated the worker's traceback in the middle
    return line if len(line) <= limit else line[: limit - 3] + "..."


def collect_rows(sweep_dir: str, dims: Sequence[SearchDimension]) -> list[TrialRow]:
    """The trials of a sweep from Tune's experiment state in ``sweep_dir`` (local folder or URI)."""
    from ray.tune import ExperimentAnalysis
    from ray.tune.result import AUTO_RESULT_KEYS

    analysis = ExperimentAnalysis(sweep_dir)
    rows = []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        result = trial.last_result or {}
        values: dict[str, Any] = {}
        for dim in dims:
            if dim.key in trial.config:
                values.update(dim.leaves(dim.value(trial.config[dim.key])))
        metrics = {
            k: float(v) for k, v in result.items()
            if k not in _NOT_METRICS and k not in AUTO_RESULT_KEYS
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        status = _status(trial.status, result)
        error = _last_error_line(trial.get_error()) if status == FAILED else ""
        info = {k: str(result[k]) for k in INFO_KEYS if result.get(k)}
        rows.append(TrialRow(trial.trial_id, status, values, metrics, info, error))
    return rows


def timing_not_measurable(row: TrialRow, metric: str) -> bool:
    """Whether ``metric`` is a timing figure this trial could not measure (shown as n/a, never 0)."""
    return metric.startswith("timing_") and metric not in row.metrics and row.metrics.get(UNMEASURABLE_TIMING, 0) > 0


def headline_metrics(rows: Sequence[TrialRow], sweep_metric: str) -> list[str]:
    """The paper's columns that some trial has (or could not measure), in the paper's order, then the
    sweep's metric and the loss."""
    present = {k for r in rows for k in r.metrics}
    if any(timing_not_measurable(r, "timing_mae_s") for r in rows):
        present.add("timing_mae_s")
    ordered = sorted(k for k in present if k.startswith("fd_") and not k.startswith(_COUNTS))
    ordered += sorted(k for k in present if re.fullmatch(r"kl_.+_ref_gen", k))
    ordered += [k for k in ("clap_score", "timing_mae_s", "adherence_pass_rate") if k in present]
    for k in (sweep_metric, "loss"):
        if k not in ordered:
            ordered.append(k)
    return ordered


def metric_header(key: str) -> str:
    if key.startswith("fd_"):
        return f"FD ({key[3:]})"
    match = re.fullmatch(r"kl_(.+)_ref_gen", key)
    if match:
        return f"KL {match.group(1)} (ref||gen)"
    return {"clap_score": "CLAP score", "timing_mae_s": "timing MAE (s)", "adherence_pass_rate": "adherence",
            "loss": "final loss", "step": "steps"}.get(key, key)


def best_trial(rows: Sequence[TrialRow], metric: str, mode: str) -> Optional[TrialRow]:
    scored = [r for r in rows if r.status == FINISHED and metric in r.metrics]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda r: r.metrics[metric])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else str(value)
    return text.replace("|", "\\|")


def _value_keys(rows: Sequence[TrialRow]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.values if k not in keys]
    return keys


def write_markdown(rows: Sequence[TrialRow], path: Path, *, title: str, metric: str, mode: str) -> Path:
    value_keys = _value_keys(rows)
    labels = column_labels(value_keys)
    metrics = headline_metrics(rows, metric)
    best = best_trial(rows, metric, mode)
    header = ["trial", *(labels[k] for k in value_keys), *(metric_header(m) for m in metrics), "steps", "status"]
    lines = [f"# {title}", "",
             f"Ranked by `{metric}` ({'lower' if mode == 'min' else 'higher'} is better); "
             f"best: {best.trial_id if best else 'none finished'}. "
             f"{sum(r.status == FINISHED for r in rows)} of {len(rows)} trials finished.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.trial_id, *(_cell(row.values.get(k)) for k in value_keys)]
        for m in metrics:
            text = NOT_MEASURABLE if timing_not_measurable(row, m) else _cell(row.metrics.get(m))
            cells.append(f"**{text}**" if best is row and m == metric else text)
        cells += [_cell(int(row.metrics["step"]) if "step" in row.metrics else None), row.status]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r.status == FAILED]
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- {r.trial_id}: {r.error or 'see the trial folder'}" for r in failed]
    lines += ["", "KL is KL(reference || generated); FD and KL name the embedder and tagger they were computed "
                  "with (proxies are not the paper's OpenL3 / PaSST figures)."]
    partial = [r for r in rows if r.metrics.get(UNMEASURABLE_TIMING, 0) > 0]
    if partial:
        lines += ["", f"Timing {NOT_MEASURABLE}: {', '.join(r.trial_id for r in partial)} generated clips that stop "
                      "at (or before) their requested seconds_total, where a late end cannot show, so their timing "
                      "is not measured (`timing_num_unmeasurable` clips in the CSV; a trial with some measurable "
                      "clips reports timing over those only). Use a window (data.window_samples / "
                      "data.sample_rate) longer than every requested length."]
    lines.append("")
    path.write_text("\n".join(lines))
    return path


def table_columns(rows: Sequence[TrialRow]) -> dict[str, list]:
    """Every field of every row as columns (what the CSV and the MLflow table hold)."""
    value_keys = _value_keys(rows)
    metric_keys = sorted({k for r in rows for k in r.metrics})
    columns: dict[str, list] = {"trial_id": [r.trial_id for r in rows], "status": [r.status for r in rows]}
    for key in value_keys:
        columns[key] = [_csv_value(r.values.get(key)) for r in rows]
    for key in metric_keys:
        columns[key] = [r.metrics.get(key) for r in rows]
    for key in INFO_KEYS:
        columns[key] = [r.info.get(key, "") for r in rows]
    columns["error"] = [r.error for r in rows]
    return columns


def _csv_value(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def write_csv(rows: Sequence[TrialRow], path: Path) -> Path:
    columns = table_columns(rows)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(len(rows)):
            writer.writerow(["" if columns[k][i] is None else columns[k][i] for k in columns])
    return path


def trial_label(row: TrialRow, limit: int = 28) -> str:
    """Short x-axis label: the trial's values (paths shortened to their last part)."""
    parts = []
    for value in row.values.values():
        text = value if isinstance(value, str) else _cell(value)
        parts.append(text.rstrip("/").rsplit("/", 1)[-1] if isinstance(value, str) and "/" in value else text)
    label = ", ".join(parts) or row.trial_id
    return label if len(label) <= limit else label[: limit - 1] + "~"


def write_bar_chart(rows: Sequence[TrialRow], metric: str, path: Path, *, mode: str, title: str) -> Path:
    """One bar per trial; trials without the metric (failed, stopped) are named instead of drawn."""
    from sa_train.tracking.media import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4), dpi=100)
    best = best_trial(rows, metric, mode)
    positions = list(range(len(rows)))
    heights = [rows[i].metrics.get(metric, 0.0) for i in positions]
    colours = ["tab:orange" if rows[i] is best else "tab:blue" for i in positions]
    ax.bar(positions, heights, color=colours)
    for i in positions:
        if metric not in rows[i].metrics:  # no bar: say why (a missing figure is not a 0)
            why = NOT_MEASURABLE if timing_not_measurable(rows[i], metric) else rows[i].status
            ax.text(i, 0, why, ha="center", va="bottom", rotation=90, fontsize=8, color="tab:red")
    ax.set_xticks(positions, [trial_label(r) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric_header(metric))
    ax.set_title(f"{title}: {metric_header(metric)} ({'lower' if mode == 'min' else 'higher'} is better)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(rows: Sequence[TrialRow], out_dir: Path, *, title: str, metric: str, mode: str) -> dict[str, Path]:
    """Markdown, CSV and one PNG per headline metric some trial has; returns {file name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {MARKDOWN: write_markdown(rows, out_dir / MARKDOWN, title=title, metric=metric, mode=mode),
             CSV: write_csv(rows, out_dir / CSV)}
    for name in headline_metrics(rows, metric):
        if any(name in r.metrics for r in rows):  # a column no trial could measure gets no chart
            # loss and accuracy-like metrics: lower is better unless the sweep says otherwise for its metric
            metric_mode = mode if name == metric else ("max" if name in ("clap_score", "adherence_pass_rate") else "min")
            file = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
            files[file] = write_bar_chart(rows, name, out_dir / file, mode=metric_mode, title=title)
    return files
