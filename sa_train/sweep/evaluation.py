"""The end of a trial: generate clips from its exported model and score them with sa_train.evaluation.

Every trial generates the same prompts with the same seed, so the ablation compares models, not
noise. Clips keep the model's whole window (not trimmed to seconds_total): the timing metric finds
where their content ends, as the paper's evaluation does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

from sa_train.config.fields import ConfigError
from sa_train.sweep.config import SweepEvaluationConfig

logger = logging.getLogger(__name__)

GENERATED_DIR = "generated"
REPORT_DIR = "evaluation"
BATCH_SIZE = 4


def evaluation_requests(ev: SweepEvaluationConfig, window_seconds: float) -> list[tuple[str, float]]:
    """(prompt, seconds_total) per clip: prompts, then prompts_file lines (text or JSONL)."""
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
    seconds = list(ev.seconds_total)
    if len(seconds) == 1:
        seconds = seconds * len(prompts)
    requests = []
    for i, prompt in enumerate(prompts):
        given = file_seconds[i] if file_seconds[i] is not None else (seconds[i] if i < len(seconds) else None)
        requests.append((prompt, min(given, window_seconds) if given is not None else window_seconds))
    return requests[: ev.max_clips] if ev.max_clips else requests


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
