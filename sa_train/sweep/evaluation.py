"""The end of a trial: generate clips from its exported model and score them with sa_train.evaluation.

Every trial generates the same prompts with the same seed, so the ablation compares models, not
noise. Clips keep the model's whole window (not trimmed to seconds_total): the timing metric finds
where their content ends, as the paper's evaluation does. That needs room after each requested
length, so :func:`check_timing_lengths` compares the requests with every trial's window before any
trial starts: a sweep ranked by a timing metric is refused when a request does not fit, and any
other sweep is told that those clips' timing will be reported as not measurable (never as 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from sa_train.config.fields import ConfigError
from sa_train.evaluation.timing import MIN_ROOM_SECONDS, timing_measurable
from sa_train.sweep.config import SweepEvaluationConfig

logger = logging.getLogger(__name__)

GENERATED_DIR = "generated"
REPORT_DIR = "evaluation"
BATCH_SIZE = 4
TIMING_METRIC_PREFIX = "timing_"
# Where a clip's requested length came from, for messages that name the key to change.
FROM_LIST, FROM_FILE, FROM_WINDOW = "evaluation.seconds_total", "evaluation.prompts_file", "the window (no length given)"


@dataclass(frozen=True)
class EvaluationRequest:
    """One evaluation clip: its prompt, the seconds_total it asks for, and where that came from."""

    prompt: str
    seconds_total: float
    source: str  # FROM_LIST | FROM_FILE | FROM_WINDOW


def _prompt_lines(ev: SweepEvaluationConfig) -> tuple[list[str], list[Optional[float]]]:
    """Prompts, then prompts_file lines (text or JSONL), with the file's seconds where it gives them."""
    prompts = list(ev.prompts)
    file_seconds: list[Optional[float]] = [None] * len(prompts)
    if ev.prompts_file:
        for number, line in enumerate(Path(ev.prompts_file).read_text().splitlines(), 1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    row = json.loads(line)
                    prompts.append(str(row["prompt"] if "prompt" in row else row["caption"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ConfigError(f"{ev.prompts_file}:{number}: a JSONL line needs a 'prompt' or 'caption' "
                                      f"field") from None
                given = row.get("seconds_total", row.get("seconds"))
                file_seconds.append(float(given) if given is not None else None)
            else:
                prompts.append(line.strip())
                file_seconds.append(None)
    return prompts, file_seconds


def requested_clips(ev: SweepEvaluationConfig, window_seconds: float) -> list[EvaluationRequest]:
    """The clips to generate, with where each length came from: the prompts file's seconds_total
    (or seconds), else evaluation.seconds_total, else the model's window.

    A length is kept as asked even when it exceeds the window (training conditions crops of long
    files the same way); whether its timing can be measured is the evaluation's question.
    """
    prompts, file_seconds = _prompt_lines(ev)
    seconds = list(ev.seconds_total)
    if len(seconds) == 1:
        seconds = seconds * len(prompts)
    requests = []
    for i, prompt in enumerate(prompts):
        if file_seconds[i] is not None:
            requests.append(EvaluationRequest(prompt, file_seconds[i], FROM_FILE))
        elif i < len(seconds):
            requests.append(EvaluationRequest(prompt, float(seconds[i]), FROM_LIST))
        else:
            requests.append(EvaluationRequest(prompt, window_seconds, FROM_WINDOW))
    return requests[: ev.max_clips] if ev.max_clips else requests


def evaluation_requests(ev: SweepEvaluationConfig, window_seconds: float) -> list[tuple[str, float]]:
    """(prompt, seconds_total) per clip: see :func:`requested_clips`."""
    return [(r.prompt, r.seconds_total) for r in requested_clips(ev, window_seconds)]


def is_timing_metric(metric: str) -> bool:
    return metric.startswith(TIMING_METRIC_PREFIX)


def _window_multiple(cfg) -> int:
    """What data.window_samples must be a multiple of (sa_train.config.validate)."""
    return cfg.model.autoencoder.downsampling * cfg.model.unet.downsampling


def _describe_sources(requests: Sequence[EvaluationRequest], ev: SweepEvaluationConfig) -> str:
    names = []
    for source in dict.fromkeys(r.source for r in requests):
        names.append(f"{FROM_FILE} ({ev.prompts_file})" if source == FROM_FILE else source)
    return " and ".join(names)


def check_timing_lengths(ev: SweepEvaluationConfig, metric: str, configs: Sequence, origin: str) -> list[str]:
    """Compare the requested lengths with the window of every trial config (``configs``:
    ExperimentConfigs) before any trial starts.

    A clip's timing error is measurable only when the clip (the whole window) runs at least
    MIN_ROOM_SECONDS past its request. When the sweep ranks by a timing metric, one request without
    that room is a ConfigError naming the key, the lengths and the window; otherwise the problems
    are returned (and logged) as warnings: those clips' timing is reported as not measurable.
    """
    if not ev.enabled:
        return []
    warnings: list[str] = []
    seen = set()
    for cfg in configs:
        samples, rate = cfg.data.window_samples, cfg.data.sample_rate
        if (samples, rate) in seen:
            continue
        seen.add((samples, rate))
        window = samples / rate
        requests = requested_clips(ev, window)
        short = [r for r in requests if not timing_measurable(r.seconds_total, window)]
        if not short:
            continue
        lengths = sorted({round(r.seconds_total, 3) for r in short})
        shown = ", ".join(f"{x:g}" for x in lengths[:6]) + (" ..." if len(lengths) > 6 else "")
        multiple = _window_multiple(cfg)
        needed = math.ceil((max(lengths) + MIN_ROOM_SECONDS) * rate / multiple) * multiple
        what = (f"{len(short)} of {len(requests)} evaluation clips ask for seconds_total of {shown} s "
                f"(from {_describe_sources(short, ev)}), but the model's window is data.window_samples={samples} "
                f"at data.sample_rate={rate} = {window:.3g} s, and a requested length must leave "
                f"{MIN_ROOM_SECONDS:g} s of the window after it for a late end to show ("
                + (f"at most {window - MIN_ROOM_SECONDS:.3g} s here)" if window > MIN_ROOM_SECONDS
                   else "no length can here)"))
        fix = (f"raise data.window_samples to at least {needed} (a multiple of {multiple}) in the sweep's overrides, "
               f"or ask for shorter lengths")
        if any(r.source == FROM_WINDOW for r in short):
            fix += "; prompts without a length default to the whole window, so give evaluation.seconds_total"
        if is_timing_metric(metric):
            raise ConfigError(f"{origin}: metric={metric!r} cannot be measured: {what}. To rank by timing, {fix}")
        message = (f"{origin}: {what}: the timing figures of those clips will be reported as not measurable "
                   f"(n/a). To measure timing, {fix}")
        logger.warning("%s", message)
        warnings.append(message)
    return warnings


def generate_clips(exported: str, ev: SweepEvaluationConfig, out_dir: Path) -> Path:
    """Write one WAV per request and manifest.jsonl (what `sa-train evaluate` reads); returns the folder."""
    import torch

    from sa_train.generation import Generator, slug, write_wav

    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = Generator.from_exported(exported, device=device)
    cfg = generator.cfg
    sampling = dataclasses.replace(cfg.model.sampling, seed=ev.seed,
                                   **({"steps": ev.sampler_steps} if ev.sampler_steps else {}))
    requests = evaluation_requests(ev, cfg.data.window_samples / cfg.data.sample_rate)
    folder = out_dir / GENERATED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for first in range(0, len(requests), BATCH_SIZE):
        chunk = requests[first : first + BATCH_SIZE]
        batch_sampling = dataclasses.replace(sampling, seed=sampling.seed + first)
        clips = generator.generate([p for p, _ in chunk], [s for _, s in chunk], sampling=batch_sampling, trim=False)
        for i, clip in enumerate(clips):
            path = write_wav(clip, folder / f"{first + i:04d}_{slug(clip.prompt)}.wav")
            rows.append({"path": path.name, "prompt": clip.prompt, "seconds_total": clip.seconds_total,
                         "seconds_start": clip.seconds_start})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    logger.info("generated %d evaluation clips into %s", len(rows), folder)
    return folder


def evaluate_trial(exported: str, ev: SweepEvaluationConfig, out_dir: Path, cache_dir: Optional[str]) -> dict[str, float]:
    """Generate the evaluation clips and score them; returns the flat metrics of evaluate_folder."""
    from sa_train.evaluation.evaluate import evaluate_folder  # lazily: the trial's driver only

    generated = generate_clips(exported, ev, out_dir)
    return evaluate_folder(
        str(generated), reference=ev.reference, embedder=ev.embedder, tagger=ev.tagger, clap=ev.clap,
        cache_dir=cache_dir, out_dir=str(out_dir / REPORT_DIR),
    )
