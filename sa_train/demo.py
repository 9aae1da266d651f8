"""The embedded default, end to end on one machine with nothing to download:

    synthetic captioned audio -> tiny VAE (Ray Train + DeepSpeed ZeRO-2, 2 CPU workers) -> export
    -> tiny diffusion model on the frozen VAE's latents -> export -> WAVs for several prompts and
    durations -> a summary with where everything is.

Its configs are the schema's defaults (the tiny model) plus the overrides below, so it needs no
config file either.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sa_train.config import ExperimentConfig, load_config

logger = logging.getLogger(__name__)

DEMO_PROMPTS = [
    ("a sine tone at A4 (440.0 Hz), 2.0 seconds", 2.0),
    ("a drum pattern at 120 BPM, 2.5 seconds", 2.5),
    ("a burst of white noise, 1.0 seconds", 1.0),
    ("a major chord on C4, 1.5 seconds", 1.5),
]


@dataclass
class DemoSettings:
    workdir: Path
    num_files: int = 48
    autoencoder_steps: int = 100
    diffusion_steps: int = 200
    sample_steps: int = 50
    num_workers: int = 2
    zero_stage: int = 2
    seed: int = 0
    overrides: list[str] = field(default_factory=list)


def demo_config(settings: DemoSettings, stage: str, extra: list[str]) -> ExperimentConfig:
    work = settings.workdir
    common = [
        f"data.sources=[{work / 'data' / 'synth' / 'manifest.jsonl'}]",
        f"storage.path={work / 'runs'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        "tracking.experiment=sa_train_demo",
        f"distributed.num_workers={settings.num_workers}",
        "distributed.device=cpu",
        f"distributed.zero_stage={settings.zero_stage}",
        f"training.seed={settings.seed}",
        f"training.stage={stage}",
    ]
    return load_config(None, common + extra + settings.overrides)


def run_demo(settings: DemoSettings) -> dict:
    from sa_train.data.synth import write_synth_dataset
    from sa_train.generation import Generator, write_wav, slug
    from sa_train.training.launcher import launch

    started = time.perf_counter()
    work = settings.workdir.resolve()
    settings.workdir = work
    stamp = time.strftime("%Y%m%d-%H%M%S")
    timings: dict[str, float] = {}

    # 1. Data: real FLAC files with captions whose pitch, tempo and duration can be measured back.
    t0 = time.perf_counter()
    write_synth_dataset(str(work / "data" / "synth"), settings.num_files, seed=settings.seed, max_seconds=2.9)
    timings["data"] = time.perf_counter() - t0

    # 2. The autoencoder: 32,768-sample crops (0.74 s), adversarial losses after a warm-up.
    t0 = time.perf_counter()
    ae_cfg = demo_config(settings, "autoencoder", [
        f"tracking.run_name=demo-autoencoder-{stamp}", f"training.steps={settings.autoencoder_steps}",
        "data.window_samples=32768", "training.global_batch_size=4",
        "training.optimizer.lr=1e-3", "training.optimizer.betas=[0.8,0.99]",
        "training.discriminator_optimizer.lr=1e-3", "training.discriminator_optimizer.betas=[0.8,0.99]",
        f"training.adversarial_start_step={settings.autoencoder_steps // 2}",
        "training.ema.decay=0.9", f"training.checkpoint_every={settings.autoencoder_steps}",
        f"training.log_every={max(1, settings.autoencoder_steps // 10)}",
        "model.autoencoder.losses.stft_fft_sizes=[2048,1024,512,256,128,64]",
        "model.autoencoder.losses.discriminator_fft_sizes=[1024,256]",
    ])
    ae = launch(ae_cfg)
    timings["autoencoder"] = time.perf_counter() - t0

    # 3. The diffusion model on the frozen autoencoder's latents (128 frames = 2.97 s windows).
    t0 = time.perf_counter()
    diff_cfg = demo_config(settings, "diffusion", [
        f"tracking.run_name=demo-diffusion-{stamp}", f"training.steps={settings.diffusion_steps}",
        f"model.autoencoder.pretrained={ae.exported}", "training.global_batch_size=8",
        "training.optimizer.lr=1e-3", "training.lr_schedule.kind=cosine", "training.lr_schedule.warmup_steps=20",
        "training.ema.decay=0.98", f"training.checkpoint_every={settings.diffusion_steps}",
        f"training.log_every={max(1, settings.diffusion_steps // 10)}",
        f"model.sampling.steps={settings.sample_steps}",
    ])
    diffusion = launch(diff_cfg)
    timings["diffusion"] = time.perf_counter() - t0

    # 4. Generate: several prompts and durations, trimmed to seconds_total.
    t0 = time.perf_counter()
    generator = Generator.from_exported(diffusion.exported)
    clips = generator.generate([p for p, _ in DEMO_PROMPTS], [s for _, s in DEMO_PROMPTS])
    out = work / "generated"
    wavs = [write_wav(clip, out / f"{i:02d}_{slug(clip.prompt)}.wav") for i, clip in enumerate(clips)]
    timings["generate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return {"autoencoder": ae, "diffusion": diffusion, "wavs": wavs, "timings": timings,
            "tracking_uri": diffusion.tracking_uri, "workdir": work}


def summary(result: dict) -> str:
    uri = result["tracking_uri"]
    lines = [
        "",
        "sa_train demo finished",
        f"  working folder:    {result['workdir']}",
        f"  autoencoder:       {result['autoencoder'].exported}",
        f"  diffusion model:   {result['diffusion'].exported}",
        f"  generated audio:   {len(result['wavs'])} WAV files in {Path(result['wavs'][0]).parent}",
        f"  MLflow store:      {uri}",
        f"  browse the runs:   mlflow ui --backend-store-uri {uri}",
        "  wall time:         " + ", ".join(f"{k} {v:.0f}s" for k, v in result["timings"].items()),
    ]
    final = result["diffusion"].metrics
    if final.get("loss") is not None:
        lines.append(f"  final diffusion loss: {final['loss']:.4f} (step {final.get('step')})")
    return "\n".join(lines)
