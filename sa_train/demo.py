"""The embedded default, end to end on one machine with nothing to download:

    synthetic captioned audio -> tiny VAE (Ray Train + DeepSpeed ZeRO-2, 2 CPU workers) -> export
    -> tiny diffusion model on the frozen VAE's latents -> export -> WAVs for several prompts and
    durations -> a summary with where everything is.

Its configs are the schema's defaults (the tiny model) plus the overrides below, so it needs no
config file either.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sa_train.config import ExperimentConfig, load_config

logger = logging.getLogger(__name__)

# Prompts in the synthetic captions' own phrasing (sa_train/data/synth.py), so the evaluation can
# measure pitch, tempo and kind back from the audio.
DEMO_PROMPTS = [
    ("a sine tone at A4 (440.0 Hz), 2.00 seconds", 2.0),
    ("a drum pattern at 120 BPM, 2.50 seconds", 2.5),
    ("1 burst of white noise, 1.00 seconds", 1.0),
    ("a C major chord on C4 (261.6 Hz), 1.50 seconds", 1.5),
]


def say(message: str) -> None:
    """A line for the person watching the demo (the rest goes to the log file)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def stage(number: int, title: str) -> None:
    say(f"\n[{number}/5] {title}")


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
    verbose: bool = False  # workers' and Ray's output on the terminal instead of in log files
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
    from sa_train.data.encode import run_encode
    from sa_train.data.synth import write_synth_dataset
    from sa_train.evaluation.evaluate import evaluate_folder
    from sa_train.export import encoder_factory, load_exported
    from sa_train.generation import Generator, write_clips, write_manifest
    from sa_train.models.diffusion_model import DiffusionModel
    from sa_train.ray_session import ensure_ray, ray_log_folder
    from sa_train.training.launcher import launch

    started = time.perf_counter()
    work = settings.workdir.resolve()
    settings.workdir = work
    stamp = time.strftime("%Y%m%d-%H%M%S")
    timings: dict[str, float] = {}

    # 1. Data: real FLAC files with captions whose pitch, tempo and duration can be measured back.
    stage(1, f"data: {settings.num_files} synthetic captioned FLAC files in {work / 'data' / 'synth'}")
    t0 = time.perf_counter()
    write_synth_dataset(str(work / "data" / "synth"), settings.num_files, seed=settings.seed, max_seconds=2.9)
    timings["data"] = time.perf_counter() - t0
    ensure_ray(min_cpus=settings.num_workers + 1, quiet=not settings.verbose)
    say(f"      local Ray started; its logs (workers, DeepSpeed, Ray Data): {ray_log_folder()}")

    # 2. The autoencoder: 32,768-sample crops (0.74 s), adversarial losses after a warm-up.
    stage(2, f"autoencoder: the tiny VAE, {settings.autoencoder_steps} steps on {settings.num_workers} workers "
             f"(DeepSpeed ZeRO-{settings.zero_stage})")
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
    ae = launch(ae_cfg, progress_label="      autoencoder")
    timings["autoencoder"] = time.perf_counter() - t0

    # 3. Pre-encode the dataset once with the frozen autoencoder (as the paper does): diffusion
    # steps then read latents instead of running the encoder on every window.
    stage(3, "encode: the dataset into latents with the frozen VAE")
    t0 = time.perf_counter()
    latents = work / "latents"
    encode_cfg = demo_config(settings, "diffusion", [f"model.autoencoder.pretrained={ae.exported}"])
    exported_ae = load_exported(ae.exported, expect_stage="autoencoder")
    run_encode(encode_cfg.data, encoder_factory(ae.exported), exported_ae.identity, str(latents),
               exported_ae.model.downsampling, num_actors=settings.num_workers)
    timings["encode"] = time.perf_counter() - t0
    say(f"      latents in {latents} ({timings['encode']:.0f} s)")

    # 4. The diffusion model on those latents (128 frames = 2.97 s windows).
    stage(4, f"diffusion: the tiny U-Net on the latents, {settings.diffusion_steps} steps on "
             f"{settings.num_workers} workers")
    t0 = time.perf_counter()
    diff_cfg = demo_config(settings, "diffusion", [
        f"tracking.run_name=demo-diffusion-{stamp}", f"training.steps={settings.diffusion_steps}",
        f"model.autoencoder.pretrained={ae.exported}", f"data.latents={latents}", "training.global_batch_size=8",
        "training.optimizer.lr=1e-3", "training.lr_schedule.kind=cosine", "training.lr_schedule.warmup_steps=20",
        "training.ema.decay=0.98", f"training.checkpoint_every={settings.diffusion_steps}",
        f"training.log_every={max(1, settings.diffusion_steps // 10)}",
        f"model.sampling.steps={settings.sample_steps}",
    ])
    diffusion = launch(diff_cfg, progress_label="      diffusion")
    timings["diffusion"] = time.perf_counter() - t0

    # 5. Generate with the trained model and with the same model untrained, the whole window each
    # (the content's end must be visible to measure timing), and evaluate both the same way.
    stage(5, f"generate and evaluate: {len(DEMO_PROMPTS)} prompts, trained and untrained model")
    t0 = time.perf_counter()
    trained = Generator.from_exported(diffusion.exported)
    untrained_model = DiffusionModel(trained.cfg.model)  # the seed's initial weights
    untrained = Generator(untrained_model, trained.autoencoder, trained.cfg)
    prompts, seconds = [p for p, _ in DEMO_PROMPTS], [s for _, s in DEMO_PROMPTS]
    figures = {}
    for name, generator in (("trained", trained), ("untrained", untrained)):
        out = work / "generated" / name
        rows = write_clips(generator.generate(prompts, seconds, trim=False), out)
        write_manifest(rows, out)
        figures[name] = evaluate_folder(str(out), reference=None, embedder=None, tagger="synth_kind",
                                        out_dir=str(out / "evaluation"))
    wavs = sorted((work / "generated" / "trained").glob("*.wav"))
    timings["generate+evaluate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    return {"autoencoder": ae, "diffusion": diffusion, "wavs": wavs, "timings": timings,
            "tracking_uri": diffusion.tracking_uri, "workdir": work, "figures": figures}


FIGURES = [
    ("timing_mae_s", "timing error: |detected end - requested seconds_total| (s)"),
    ("adherence_pass_rate", "prompt adherence: clips whose pitch/tempo/kind match the prompt"),
    ("adherence_kind_pass_rate", "  sound kind (tone, chord, noise, drums) recognised"),
    ("adherence_pitch_mae_cents", "  pitch error (cents)"),
    ("adherence_tempo_mae_bpm", "  tempo error (BPM)"),
]


def figures_table(figures: dict) -> list[str]:
    lines = [f"  {'figure':<68} {'untrained':>10} {'trained':>10}"]
    for key, label in FIGURES:
        before, after = figures["untrained"].get(key), figures["trained"].get(key)
        if before is None and after is None:
            continue
        cell = lambda v: f"{v:10.3g}" if v is not None else f"{'-':>10}"
        lines.append(f"  {label:<68} {cell(before)} {cell(after)}")
    return lines


def summary(result: dict) -> str:
    uri = result["tracking_uri"]
    lines = [
        "",
        "sa_train demo finished",
        f"  working folder:    {result['workdir']}",
        f"  autoencoder:       {result['autoencoder'].exported}",
        f"  diffusion model:   {result['diffusion'].exported}",
        f"  generated audio:   {len(result['wavs'])} WAV files in {Path(result['wavs'][0]).parent} "
        "(and the untrained model's beside it)",
        f"  MLflow store:      {uri}",
        f"  browse the runs:   mlflow ui --backend-store-uri {uri}",
        "  wall time:         " + ", ".join(f"{k} {v:.0f}s" for k, v in result["timings"].items()),
    ]
    final = result["diffusion"].metrics
    if final.get("loss") is not None:
        lines.append(f"  final diffusion loss: {final['loss']:.4f} (step {final.get('step')})")
    lines += ["", "What training bought (sa_train.evaluation on the generated clips, whole windows):"]
    lines += figures_table(result["figures"])
    return "\n".join(lines)
