"""The evaluation's files: ``evaluation.json`` (everything), ``evaluation.md`` (for people) and
``timing.png`` (detected against requested length)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from sa_train.evaluation.timing import plot_timing


def _plain(value: Any) -> Any:
    """JSON-safe: dataclasses to dicts, numpy scalars to floats, NaN to None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar or 0-d array
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result) -> str:
    """The report as Markdown: metrics, notes, timing per length bin, then one row per clip."""
    s = result.settings
    lines = ["# Evaluation", "", f"- generated: `{s['generated']}`", f"- reference: `{s['reference']}`"]
    if s.get("embedder"):
        lines.append(f"- embedder: `{s['embedder']['name']}` {json.dumps(s['embedder']['settings'], sort_keys=True)}")
    if s.get("tagger"):
        lines.append(f"- tagger: `{s['tagger']['name']}`; KL direction: {s['kl_direction']}")
    if s.get("clap"):
        lines.append(f"- CLAP model: `{s['clap']}`")
    lines += ["", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v, 4)} |" for k, v in result.metrics.items()]
    if result.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result.notes]
    if result.timing is not None:
        lines += ["", "## Timing by requested length", "", "| requested | clips | MAE (s) | bias (s) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {b.label} | {b.count} | {_fmt(b.mae)} | {_fmt(b.bias)} |" for b in result.timing.bins if b.count]
    lines += ["", "## Clips", "", "| file | prompt | requested (s) | detected end (s) | KL | CLAP | adherence |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in result.clips:
        passed = c.adherence.get("passed", {})
        adherence = ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in passed.items()) or "-"
        prompt = (c.prompt or "-").replace("|", "/")
        lines.append(f"| {os.path.basename(c.path)} | {prompt} | {_fmt(c.seconds_total, 2)} | "
                     f"{_fmt(c.detected_end_s, 2)} | {_fmt(c.kl)} | {_fmt(c.clap_similarity)} | {adherence} |")
    return "\n".join(lines) + "\n"


def write_reports(result, out_dir: str) -> dict[str, str]:
    """Write the JSON, Markdown and (with timing) PNG reports; returns ``{kind: path}``."""
    from sa_train.evaluation.evaluate import REPORT_JSON, REPORT_MARKDOWN, TIMING_PLOT

    os.makedirs(out_dir, exist_ok=True)
    files = {"json": os.path.join(out_dir, REPORT_JSON), "markdown": os.path.join(out_dir, REPORT_MARKDOWN)}
    payload = {"metrics": result.metrics, "settings": result.settings, "notes": result.notes,
               "timing": result.timing, "clips": result.clips}
    with open(files["json"], "w", encoding="utf-8") as f:
        json.dump(_plain(payload), f, indent=2, sort_keys=False)
        f.write("\n")
    with open(files["markdown"], "w", encoding="utf-8") as f:
        f.write(markdown(result))
    timed = [c for c in result.clips if c.detected_end_s is not None]
    if timed:
        files["timing_plot"] = plot_timing([c.detected_end_s for c in timed], [c.seconds_total for c in timed],
                                           os.path.join(out_dir, TIMING_PLOT))
    return files
