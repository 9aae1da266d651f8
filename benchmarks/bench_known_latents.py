"""Can the demo's tiny U-Net learn timing and sound kind? Diffusion alone, on latents with a known answer.

No autoencoder: each of the demo's 48 training files (synthetic, 1-5 s, their own captions) becomes
a latent window of 272 frames (6.32 s at 1024x) holding one fixed random vector per sound kind on
its real frames and zeros on the padded frames after its length. The U-Net
(``DiffusionModel(load_config(...).model)``, the schema's tiny model) is trained on them with the
project's v-objective, CFG dropout and EMA in plain PyTorch, one thread, then samples whole windows
for the demo's 8 prompts (2, 3, 4 and 5 s; DPM-Solver++ 50 steps) at several CFG scales:

    timing   the clip's end = last frame whose RMS is above half the kind vectors' RMS; counted
             when it falls in the requested second, (L - 1 - 0.25, L + 0.25] seconds, as the demo
    kind     the kind vector nearest to the mean of the frames before the end

The answer is known, so a miss is the U-Net's or the recipe's, never the VAE's. Variants compare
what lets a 2-level U-Net know where its window ends: positions for the self-attention
(``model.unet.positional_encoding``) and the timing embeddings as a global vector that modulates
every ResNet block (``model.conditioning.timing.global_condition``) besides the cross-attention.

    .venv/bin/python -m benchmarks.bench_known_latents                 # 4 variants x 500 steps, ~12 min
    .venv/bin/python -m benchmarks.bench_known_latents --variants sinusoidal+global --steps 1000
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import platform
import time

import numpy as np
import torch

from sa_train.config import load_config
from sa_train.data.synth import KINDS, synth_example
from sa_train.demo import DEMO_PROMPTS, SYNTH_SECONDS
from sa_train.diffusion.denoiser import CFGDenoiser, VDenoiser
from sa_train.diffusion.ema import EMA
from sa_train.diffusion.objective import v_objective_loss
from sa_train.diffusion.samplers import generate as sample
from sa_train.evaluation.adherence import parse_prompt

SAMPLE_RATE, DOWNSAMPLING, FRAMES = 44100, 1024, 272
VARIANTS = {  # name -> overrides
    "none": ["model.unet.positional_encoding=none"],
    "sinusoidal": ["model.unet.positional_encoding=sinusoidal"],
    "global": ["model.unet.positional_encoding=none", "model.conditioning.timing.global_condition=true"],
    "sinusoidal+global": ["model.unet.positional_encoding=sinusoidal", "model.conditioning.timing.global_condition=true"],
}


def known_latents(channels: int, seed: int = 0) -> tuple[list[tuple[str, str, float]], dict[str, torch.Tensor]]:
    """The demo's training files as (caption, kind, seconds), and a random vector per kind."""
    low, high = SYNTH_SECONDS
    files = []
    for index in range(48):
        audio, caption, fields = synth_example(index, seed, sample_rate=SAMPLE_RATE, min_seconds=low, max_seconds=high)
        files.append((caption, fields["kind"], audio.shape[0] / SAMPLE_RATE))
    generator = torch.Generator().manual_seed(seed + 1)
    return files, {kind: torch.randn(channels, generator=generator) for kind in KINDS}


def draw_batch(files, vectors, size: int, rng: np.random.Generator):
    channels = next(iter(vectors.values())).shape[0]
    x0 = torch.zeros(size, channels, FRAMES)
    prompts, totals = [], []
    for b in range(size):
        caption, kind, seconds = files[int(rng.integers(len(files)))]
        x0[b, :, : math.ceil(seconds * SAMPLE_RATE / DOWNSAMPLING)] = vectors[kind][:, None]
        prompts.append(caption)
        totals.append(seconds)
    return x0, prompts, torch.zeros(size), torch.tensor(totals)


@torch.no_grad()
def evaluate(model, cfg, vectors, cfg_scale: float) -> tuple[int, int, list[float]]:
    """(clips ending in the requested second, kinds right, detected ends) for the demo's prompts."""
    prompts, seconds = [p for p, _ in DEMO_PROMPTS], [s for _, s in DEMO_PROMPTS]
    n = len(prompts)
    cond = model.condition(prompts, torch.zeros(n), torch.tensor(seconds))
    denoiser = CFGDenoiser(VDenoiser(lambda x, t, cond: model.predict_v(x, t, cond)), {"cond": cond},
                           {"cond": model.conditioner.null_conditioning(n)}, cfg_scale)
    channels = next(iter(vectors.values())).shape[0]
    latents = sample(denoiser, (n, channels, FRAMES), cfg.model.sampling, generator=torch.Generator().manual_seed(0))
    level = torch.stack(list(vectors.values())).pow(2).mean().sqrt().item()
    within = kinds = 0
    ends = []
    for i, (prompt, requested) in enumerate(DEMO_PROMPTS):
        active = (latents[i].pow(2).mean(0).sqrt() > level / 2).nonzero().flatten()
        end = (int(active[-1]) + 1) * DOWNSAMPLING / SAMPLE_RATE if active.numel() else 0.0
        ends.append(end)
        within += requested - 1 - 0.25 < end <= requested + 0.25
        content = latents[i][:, : max(1, int(end * SAMPLE_RATE / DOWNSAMPLING))].mean(1)
        nearest = min(KINDS, key=lambda k: float((content - vectors[k]).norm()))
        kinds += nearest == parse_prompt(prompt).kind
    return within, kinds, ends


def run(variant: str, steps: int, evals: list[int], scales: list[float], lr: float, batch: int, seed: int):
    cfg = load_config(None, ["training.stage=diffusion", "data.latents=unused", f"data.window_samples={FRAMES * DOWNSAMPLING}",
                             "model.sampling.steps=50"] + VARIANTS[variant])
    torch.manual_seed(seed)
    from sa_train.models.diffusion_model import DiffusionModel

    model = DiffusionModel(cfg.model)
    files, vectors = known_latents(cfg.model.unet.in_channels, seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    warmup = 20
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    ema = EMA(model, 0.98)
    rows, started = [], time.perf_counter()
    for step in range(steps):
        x0, prompts, start, total = draw_batch(files, vectors, batch, rng)
        t, noise = torch.rand(batch), torch.randn_like(x0)
        loss = v_objective_loss(lambda x, tt: model(x, tt, prompts, start, total, cfg_dropout=0.1), x0, t, noise).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ema.update(model, step)
        if step + 1 in evals:
            averaged = copy.deepcopy(model).eval()
            ema.copy_to(averaged)
            for scale in scales:
                within, kinds, ends = evaluate(averaged, cfg, vectors, scale)
                rows.append((variant, step + 1, scale, within, kinds, ends, time.perf_counter() - started))
                print(f"  {variant:<18} {step + 1:>5} steps  cfg {scale:<4} timing {within}/8  kind {kinds}/8  "
                      f"ends {' '.join(f'{e:.1f}' for e in ends)}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--evals", type=int, nargs="*", default=None, help="steps at which to sample (default: the last)")
    p.add_argument("--cfg-scales", type=float, nargs="+", default=[1.0, 3.0, 6.0])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = p.parse_args()
    torch.set_num_threads(1)
    evals = sorted(set(args.evals or []) | {args.steps})
    print(f"requested seconds: {' '.join(f'{s:.0f}' for _, s in DEMO_PROMPTS)}; a clip counts when its end is in "
          "(L - 1.25, L + 0.25]")
    rows = []
    for variant in args.variants:
        rows += run(variant, args.steps, evals, args.cfg_scales, args.lr, args.batch, args.seed)
    cells = "; ".join(f"{v} {s} steps cfg {c:g}: timing {w}/8, kind {k}/8" for v, s, c, w, k, _, _ in rows)
    line = (f"- {datetime.date.today()} bench_known_latents (tiny U-Net, known-answer latents of the demo's 48 files, "
            f"batch {args.batch}, lr {args.lr:g}, 1 thread; {platform.machine()}): {cells}")
    from benchmarks.results import record

    record(line, append=not args.no_append)


if __name__ == "__main__":
    main()
