"""VAE recipe benchmark: does the tiny autoencoder learn to reconstruct, and with which loss and recipe?

Trains the demo's VAE (``build_autoencoder(cfg.model)`` of ``load_config``, schema defaults = the
tiny model) in plain PyTorch, no Ray and no DeepSpeed, with the project's own ``AutoencoderLosses``
and STFT discriminator, on crops of the synthetic clips of ``sa_train.data.synth`` (the demo's 48
files, seed 0), the way the autoencoder task steps them: a discriminator step on detached
reconstructions once adversarial training has started, then the generator step with the
discriminator frozen; AdamW, global gradient-norm clipping at ``training.grad_clip``, EMA of the
weights (what the demo exports and what is evaluated here).

Held out: 8 clips of seed 1 (whole clips), one dual-mono clip and 1.5 s of digital silence, each
encoded to the posterior mean and decoded in eval mode:

    SNR      10 log10(|x|^2 / |x - y|^2) per clip, mean over clips (dB; 0 = silence out); also
             over the tonal clips (tones and chords) alone, whose waveform is predictable
    SI-SDR   scale-invariant SDR per tonal clip, mean (dB)
    gain     level of the reconstruction relative to the clip, mean over clips (dB)
    MRSTFT   multi-resolution STFT distance (the project's loss, no A-weighting, FFT 2048..32)
    silence  RMS level of the decoded silence (dBFS)
    side     level of the decoded dual-mono clip's side (L-R) relative to its mid (dB)

The first row is a decoder that outputs silence: a model whose MRSTFT is not clearly below it has
learned nothing.

``--loss old`` trains with the STFT loss as it was before issue 11 (its spectral convergence
divides by the target's norm + 1e-7, its log floor is 1e-7 on unnormalised magnitudes): kept here,
and only here, to measure against. ``--loss new`` is ``sa_train.models.autoencoder.losses``.

One thread, as each of the demo's two Ray workers. The demo's global batch is split over its 2
workers, so a run here with the same global batch takes about twice the demo's wall time.

    # the issue's setting, old vs new loss (lr 1e-3, 300 steps, 8192-sample crops): ~5 min
    .venv/bin/python -m benchmarks.vae_recipe
    # the recipe measured for the demo, with figures along the way: ~9 min on a loaded machine
    .venv/bin/python -m benchmarks.vae_recipe --loss new --lr 3e-4 --steps 1500 --eval-every 300

Findings (2026-12-02, 2 shared cores) are in the report of issue 11: with either loss the tiny VAE
first drops its output 20-30 dB below the input and ignores its latents (an almost constant
output that the log-spectral loss scores like silence); at lr 3e-4 it leaves that plateau after
about 800 steps of 4 x 8192 samples, at lr 1e-3 not within 600. SNR stays near 0 dB: the loss is
blind to phase, so the MRSTFT column is the one that shows learning.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sa_train.config import load_config  # noqa: E402
from sa_train.data.synth import KINDS, synth_example  # noqa: E402
from sa_train.models.autoencoder.losses import MultiResolutionSTFTLoss, a_weighting  # noqa: E402
from sa_train.models.autoencoder.training_losses import AutoencoderLosses, build_discriminator  # noqa: E402
from sa_train.models.diffusion_model import build_autoencoder  # noqa: E402
from sa_train.training.lr_schedule import lr_multiplier  # noqa: E402

SAMPLE_RATE = 44100
METRIC_FFT_SIZES = [2048, 1024, 512, 256, 128, 64, 32]


class PreFixSTFTLoss(nn.Module):
    """The multi-resolution STFT loss as it was before issue 11, for comparison only.

    prediction, target: (batch, channels, samples) or (batch, samples) -> (batch,)
    """

    EPS = 1e-7

    def __init__(self, fft_sizes: Sequence[int], sample_rate: int = SAMPLE_RATE, perceptual_weighting: bool = False):
        super().__init__()
        self.fft_sizes, self.sample_rate, self.perceptual_weighting = list(fft_sizes), sample_rate, perceptual_weighting

    def _magnitude(self, audio: torch.Tensor, n_fft: int) -> torch.Tensor:
        window = torch.hann_window(n_fft, dtype=audio.dtype)
        spec = torch.stft(audio, n_fft, hop_length=n_fft // 4, window=window, center=True,
                          pad_mode="constant", return_complex=True)
        magnitude = (spec.real.square() + spec.imag.square()).clamp_min(self.EPS**2).sqrt()
        if self.perceptual_weighting:
            bins = torch.linspace(0, self.sample_rate / 2, n_fft // 2 + 1)
            magnitude = magnitude * a_weighting(bins).to(magnitude.dtype)[:, None]
        return magnitude

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        batch = prediction.shape[0]
        pred = prediction.reshape(-1, prediction.shape[-1]).float()
        true = target.reshape(-1, target.shape[-1]).float()
        total = pred.new_zeros(batch)
        for n_fft in self.fft_sizes:
            p = self._magnitude(pred, n_fft).reshape(batch, -1)
            t = self._magnitude(true, n_fft).reshape(batch, -1)
            convergence = torch.linalg.vector_norm(t - p, dim=1) / (torch.linalg.vector_norm(t, dim=1) + self.EPS)
            log_distance = (t.clamp_min(self.EPS).log() - p.clamp_min(self.EPS).log()).abs().mean(dim=1)
            total = total + convergence + log_distance
        return total / len(self.fft_sizes)


class StereoOfPlainLoss(nn.Module):
    """The stereo STFT loss by its definition: a plain loss on mid (L+R) and side (L-R), weight 1 on
    their mean, plus on left and on right, 0.5 each. Here for the pre-fix loss; bench_stft_loss
    times it against the project's ``StereoSTFTLoss``.

    prediction, target: (batch, 2, samples) -> (batch,)
    """

    def __init__(self, plain: nn.Module):
        super().__init__()
        self.plain = plain

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        (pl, pr), (tl, tr) = prediction.unbind(1), target.unbind(1)
        mid_side = 0.5 * (self.plain(pl + pr, tl + tr) + self.plain(pl - pr, tl - tr))
        return mid_side + 0.5 * (self.plain(pl, tl) + self.plain(pr, tr))


@dataclass
class Recipe:
    loss: str = "new"
    steps: int = 300
    lr: float = 1e-3
    window: int = 8192
    batch: int = 4
    adversarial_start_step: int = 10**9
    kl_weight: float = 1e-4
    latent_channels: int = 16
    encoder_width: int = 8
    decoder_width: int = 64
    ema_decay: float = 0.9
    stft_fft_sizes: tuple = (2048, 1024, 512, 256, 128, 64)
    discriminator_fft_sizes: tuple = (1024, 256)
    discriminator_filters: int = 32
    grad_clip: float = 1.0
    seed: int = 0
    strides: tuple = (4, 4, 8, 8)
    perceptual_weighting: bool = True
    stft_floor_db: float = -100.0  # model.autoencoder.losses.stft_floor_db
    waveform_l1_weight: float = 0.0  # model.autoencoder.losses.waveform_l1_weight
    waveform_l1_decay: float = 1.0  # model.autoencoder.losses.waveform_l1_decay
    initial_posterior_std: Optional[float] = None  # model.autoencoder.initial_posterior_std
    lr_schedule: str = "constant"  # training.lr_schedule.kind: 'constant' or 'cosine' (to 0 at the last step)

    def overrides(self) -> list[str]:
        ae = "model.autoencoder"
        return [
            "training.stage=autoencoder",
            f"training.steps={self.steps}",
            f"training.lr_schedule.kind={self.lr_schedule}",
            f"{ae}.latent_channels={self.latent_channels}",
            f"{ae}.encoder_width={self.encoder_width}",
            f"{ae}.decoder_width={self.decoder_width}",
            f"{ae}.strides=[{','.join(map(str, self.strides))}]",
            f"{ae}.initial_posterior_std={'null' if self.initial_posterior_std is None else self.initial_posterior_std}",
            f"model.unet.in_channels={self.latent_channels}",
            f"{ae}.losses.kl_weight={self.kl_weight}",
            f"{ae}.losses.stft_perceptual_weighting={str(self.perceptual_weighting).lower()}",
            f"{ae}.losses.stft_floor_db={self.stft_floor_db}",
            f"{ae}.losses.waveform_l1_weight={self.waveform_l1_weight}",
            f"{ae}.losses.waveform_l1_decay={self.waveform_l1_decay}",
            f"{ae}.losses.stft_fft_sizes=[{','.join(map(str, self.stft_fft_sizes))}]",
            f"{ae}.losses.discriminator_fft_sizes=[{','.join(map(str, self.discriminator_fft_sizes))}]",
            f"{ae}.losses.discriminator_filters={self.discriminator_filters}",
        ]


def clips(num: int, seed: int) -> list[torch.Tensor]:
    """The synthetic dataset's clips as the demo writes them (max 2.9 s): each (2, samples)."""
    out = []
    for index in range(num):
        audio, _, _ = synth_example(index, seed, max_seconds=2.9)
        # The demo's files are 16-bit FLAC: quantise the same way.
        audio = np.round(audio * 32767.0) / 32767.0
        out.append(torch.from_numpy(audio.T.astype(np.float32).copy()))
    return out


def random_crops(data: list[torch.Tensor], batch: int, window: int, rng: np.random.Generator) -> torch.Tensor:
    """(batch, 2, window): random files, random offsets, padded with silence (as the data pipeline)."""
    out = torch.zeros(batch, 2, window)
    for b in range(batch):
        clip = data[int(rng.integers(len(data)))]
        offset = int(rng.integers(0, max(clip.shape[1] - window, 0) + 1))
        piece = clip[:, offset:offset + window]
        out[b, :, :piece.shape[1]] = piece
    return out


def pad_to(audio: torch.Tensor, multiple: int) -> torch.Tensor:
    """(channels, samples) -> (1, channels, samples rounded up to ``multiple``)"""
    padded = torch.zeros(audio.shape[0], -(-audio.shape[1] // multiple) * multiple)
    padded[:, :audio.shape[1]] = audio
    return padded[None]


def db(numerator: float, denominator: float = 1.0) -> float:
    """10 log10(numerator / denominator), finite when either is 0."""
    return 10 * math.log10(max(numerator, 1e-30) / max(denominator, 1e-30))


def reconstruct_with(vae: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The VAE's deterministic reconstruction (posterior mean, eval mode): (1, 2, T) -> (1, 2, T)."""
    def reconstruct(audio: torch.Tensor) -> torch.Tensor:
        vae.eval()
        try:
            return vae(pad_to(audio[0], vae.downsampling)).reconstruction[..., :audio.shape[-1]]
        finally:
            vae.train()
    return reconstruct


@torch.no_grad()
def evaluate(reconstruct: Callable[[torch.Tensor], torch.Tensor], held_out: list[torch.Tensor],
             metric: MultiResolutionSTFTLoss) -> dict[str, float]:
    """Figures of ``reconstruct`` on the held-out clips (kinds cycle tone, chord, noise, drums)."""
    from sa_train.evaluation.embedders.spectral import KIND_CLASSES, SynthKindTagger

    tagger = SynthKindTagger()
    snr, sisdr, mrstft, gain, kind = [], [], [], [], []
    for index, clip in enumerate(held_out):
        x = clip[None]
        y = reconstruct(x)
        probabilities = tagger.class_probabilities(y[0].numpy(), SAMPLE_RATE)
        kind.append(KIND_CLASSES[int(np.argmax(probabilities))] == KINDS[index % len(KINDS)])
        snr.append(db(x.square().sum().item(), (x - y).square().sum().item()))
        alpha = (x * y).sum() / x.square().sum()
        sisdr.append(db((alpha * x).square().sum().item(), (alpha * x - y).square().sum().item()))
        mrstft.append(metric(y, x).item())
        gain.append(db(y.square().sum().item(), x.square().sum().item()))
    tonal = [i for i in range(len(held_out)) if KINDS[i % len(KINDS)] in ("tone", "chord")]
    silence = reconstruct(torch.zeros(1, 2, 65536))
    decoded = reconstruct(held_out[0][None, :1].repeat(1, 2, 1))  # dual mono
    mid, side = decoded[:, 0] + decoded[:, 1], decoded[:, 0] - decoded[:, 1]
    return {
        "snr": float(np.mean(snr)),
        "kind": float(np.mean(kind)),
        "snr_tonal": float(np.mean([snr[i] for i in tonal])),
        "sisdr_tonal": float(np.mean([sisdr[i] for i in tonal])),
        "mrstft": float(np.mean(mrstft)),
        "gain_db": float(np.mean(gain)),
        "silence_dbfs": db(silence.square().mean().item()),
        "side_db": db(side.square().mean().item(), mid.square().mean().item()),
    }


def figures(vae: nn.Module, train_data: list[torch.Tensor], held_out: list[torch.Tensor],
            metric: MultiResolutionSTFTLoss) -> dict[str, float]:
    """Held-out figures, plus SNR (tonal) and MRSTFT on the first 8 training clips (``*_train``)."""
    reconstruct = reconstruct_with(vae)
    out = evaluate(reconstruct, held_out, metric)
    seen = evaluate(reconstruct, train_data[:8], metric)
    out["snr_tonal_train"], out["mrstft_train"] = seen["snr_tonal"], seen["mrstft"]
    return out


def identity(audio: torch.Tensor) -> torch.Tensor:
    return audio


def train(recipe: Recipe, train_data: list[torch.Tensor], held_out: list[torch.Tensor],
          log_every: int = 0, eval_every: int = 0) -> list[tuple[str, dict[str, float]]]:
    """Train one VAE; returns [(label, figures)] at initialisation, every ``eval_every`` steps and
    at the end (figures of the EMA weights)."""
    from sa_train.diffusion.ema import EMA

    cfg = load_config(None, recipe.overrides())
    torch.manual_seed(recipe.seed)
    vae = build_autoencoder(cfg.model)
    ae_cfg = cfg.model.autoencoder
    discriminator = build_discriminator(ae_cfg)
    losses = AutoencoderLosses(ae_cfg.losses, sample_rate=SAMPLE_RATE)
    if recipe.loss == "old":
        losses.stft = StereoOfPlainLoss(PreFixSTFTLoss(ae_cfg.losses.stft_fft_sizes, SAMPLE_RATE,
                                                       ae_cfg.losses.stft_perceptual_weighting))
    opt_cfg = cfg.training.optimizer
    make = lambda params: torch.optim.AdamW(params, lr=recipe.lr, betas=(0.8, 0.99),  # noqa: E731
                                            weight_decay=opt_cfg.weight_decay, eps=opt_cfg.eps)
    gen_opt, disc_opt = make(vae.parameters()), make(discriminator.parameters())
    schedule = lr_multiplier(cfg.training.lr_schedule, recipe.steps)  # as the trainer's engines apply it
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in (gen_opt, disc_opt)]
    ema = EMA(vae, recipe.ema_decay)
    metric = MultiResolutionSTFTLoss(METRIC_FFT_SIZES, SAMPLE_RATE)
    rng = np.random.default_rng(recipe.seed)

    results = [("init", figures(vae, train_data, held_out, metric))]
    history: list[float] = []
    averaged = copy.deepcopy(vae)

    def snapshot(step: int, seconds: float) -> tuple[str, dict[str, float]]:
        ema.copy_to(averaged)
        found = figures(averaged, train_data, held_out, metric)
        found.update(seconds=seconds, loss_first=float(np.mean(history[:10])),
                     loss_last=float(np.mean(history[-10:])), loss_max=float(np.max(history)))
        return f"{step} steps", found

    train_seconds = 0.0
    started = time.perf_counter()
    for step in range(recipe.steps):
        real = random_crops(train_data, recipe.batch, recipe.window, rng)
        adversarial = step >= recipe.adversarial_start_step
        out = vae(real)
        if adversarial:
            d = losses.discriminator_losses(real, out.reconstruction.detach(), discriminator)["total"].mean()
            disc_opt.zero_grad()
            d.backward()
            if recipe.grad_clip:
                nn.utils.clip_grad_norm_(discriminator.parameters(), recipe.grad_clip)
            disc_opt.step()
        discriminator.requires_grad_(False)
        g = losses.generator_losses(real, out.reconstruction, out.kl, discriminator, adversarial, step=step)
        discriminator.requires_grad_(True)
        gen_opt.zero_grad()
        g["total"].mean().backward()
        if recipe.grad_clip:
            nn.utils.clip_grad_norm_(vae.parameters(), recipe.grad_clip)
        gen_opt.step()
        for scheduler in schedulers:
            scheduler.step()
        ema.update(vae, step)
        history.append(g["total"].mean().item())
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}: loss {np.mean(history[-log_every:]):.4g} "
                  f"(stft {g['stft'].mean().item():.4g}, kl {g['kl'].mean().item():.3g}) "
                  f"{train_seconds + time.perf_counter() - started:.0f}s", flush=True)
        if (eval_every and (step + 1) % eval_every == 0) or step + 1 == recipe.steps:
            train_seconds += time.perf_counter() - started
            results.append(snapshot(step + 1, train_seconds))
            started = time.perf_counter()
    return results


def table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    head = (f"{'run':<16} {'when':<10} {'SNR':>6} {'SNR ton':>7} {'SI-SDR ton':>10} {'MRSTFT':>7} {'gain':>6}"
            f" {'kind':>5} {'silence':>8} {'side':>6} {'SNR ton seen':>12} {'MRSTFT seen':>11}"
            f"  {'train loss first -> last (max)':<32} {'train s':>7}")
    lines = [head, "-" * len(head)]
    for name, when, m in rows:
        m = {k: (-math.inf if v < -150 else v) for k, v in m.items()}  # db() of an exact 0
        loss = f"{m['loss_first']:.3g} -> {m['loss_last']:.3g} ({m['loss_max']:.3g})" if "loss_first" in m else ""
        secs = f"{m['seconds']:.0f}" if "seconds" in m else ""
        lines.append(f"{name:<16} {when:<10} {m['snr']:>6.1f} {m['snr_tonal']:>7.1f} {m['sisdr_tonal']:>10.1f} "
                     f"{m['mrstft']:>7.2f} {m['gain_db']:>6.1f} {m['kind']:>5.2f} {m['silence_dbfs']:>8.1f} {m['side_db']:>6.1f} "
                     f"{m.get('snr_tonal_train', math.nan):>12.1f} {m.get('mrstft_train', math.nan):>11.2f}  "
                     f"{loss:<32} {secs:>7}")
    lines.append("kind: fraction of held-out clips whose reconstruction the synth_kind tagger recognises; "
                 "dB throughout; SNR ton / SI-SDR ton: tone and chord clips only; gain: level of the reconstruction "
                 "relative to the clip; silence: dBFS of decoded silence; side: decoded dual-mono side vs mid; "
                 "'seen': on 8 of the training clips, the rest on held-out clips")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    defaults = Recipe()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", choices=["old", "new", "both"], default="both", help="STFT loss to train with")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps per run")
    p.add_argument("--lr", type=float, default=defaults.lr, help="AdamW lr of generator and discriminator")
    p.add_argument("--window", type=int, default=defaults.window, help="training crop in samples")
    p.add_argument("--batch", type=int, default=defaults.batch, help="global batch (the demo: 4 over 2 workers)")
    p.add_argument("--adversarial-start-step", type=int, default=defaults.adversarial_start_step,
                   help="step from which the discriminator trains and the adversarial losses apply")
    p.add_argument("--kl-weight", type=float, default=defaults.kl_weight, help="model.autoencoder.losses.kl_weight")
    p.add_argument("--latent-channels", type=int, default=defaults.latent_channels)
    p.add_argument("--encoder-width", type=int, default=defaults.encoder_width)
    p.add_argument("--decoder-width", type=int, default=defaults.decoder_width)
    p.add_argument("--ema-decay", type=float, default=defaults.ema_decay, help="EMA decay (the weights evaluated)")
    p.add_argument("--stft-fft-sizes", type=int, nargs="+", default=list(defaults.stft_fft_sizes))
    p.add_argument("--discriminator-filters", type=int, default=defaults.discriminator_filters)
    p.add_argument("--discriminator-fft-sizes", type=int, nargs="+", default=list(defaults.discriminator_fft_sizes))
    p.add_argument("--strides", type=int, nargs="+", default=list(defaults.strides))
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=defaults.lr_schedule,
                   help="training.lr_schedule.kind (cosine: from --lr down to 0 at the last step)")
    p.add_argument("--initial-posterior-std", type=float, default=None, help="model.autoencoder.initial_posterior_std")
    p.add_argument("--no-perceptual-weighting", action="store_true")
    p.add_argument("--stft-floor-db", type=float, default=defaults.stft_floor_db,
                   help="model.autoencoder.losses.stft_floor_db (default -100, as the demo; -60 is measured in benchmarks/README.md)")
    p.add_argument("--waveform-l1-weight", type=float, default=defaults.waveform_l1_weight,
                   help="model.autoencoder.losses.waveform_l1_weight (default 0, the paper's recipe)")
    p.add_argument("--waveform-l1-decay", type=float, default=defaults.waveform_l1_decay,
                   help="model.autoencoder.losses.waveform_l1_decay (the weight is multiplied by it every step)")
    p.add_argument("--train-files", type=int, default=48, help="synthetic training clips (seed 0), as the demo")
    p.add_argument("--held-out-files", type=int, default=8, help="synthetic held-out clips (seed 1)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the demo's workers use 1 each)")
    p.add_argument("--log-every", type=int, default=0, help="print the training loss every this many steps")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate the EMA weights every this many steps")
    p.add_argument("--append", action="store_true", help="append a dated line to benchmarks/RESULTS.md")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    train_data, held_out = clips(args.train_files, 0), clips(args.held_out_files, 1)
    metric = MultiResolutionSTFTLoss(METRIC_FFT_SIZES, SAMPLE_RATE)
    silent = evaluate(torch.zeros_like, held_out, metric)
    seen = evaluate(torch.zeros_like, train_data[:8], metric)
    silent["snr_tonal_train"], silent["mrstft_train"] = seen["snr_tonal"], seen["mrstft"]
    clean = evaluate(identity, held_out, metric)
    rows = [("reference", "silence", silent), ("reference", "clips", {**clean, "snr_tonal_train": math.nan,
                                                                     "mrstft_train": math.nan})]
    for loss in (["old", "new"] if args.loss == "both" else [args.loss]):
        recipe = Recipe(loss=loss, steps=args.steps, lr=args.lr, window=args.window, batch=args.batch,
                        adversarial_start_step=args.adversarial_start_step, kl_weight=args.kl_weight,
                        latent_channels=args.latent_channels, encoder_width=args.encoder_width,
                        decoder_width=args.decoder_width, ema_decay=args.ema_decay,
                        stft_fft_sizes=tuple(args.stft_fft_sizes), seed=args.seed,
                        discriminator_filters=args.discriminator_filters,
                        discriminator_fft_sizes=tuple(args.discriminator_fft_sizes),
                        strides=tuple(args.strides), initial_posterior_std=args.initial_posterior_std,
                        perceptual_weighting=not args.no_perceptual_weighting, stft_floor_db=args.stft_floor_db,
                        lr_schedule=args.lr_schedule, waveform_l1_weight=args.waveform_l1_weight,
                        waveform_l1_decay=args.waveform_l1_decay)
        print(f"training: {recipe}", flush=True)
        for when, metrics in train(recipe, train_data, held_out, args.log_every, args.eval_every):
            rows.append((f"{loss} loss", when, metrics))
    print(table(rows))
    if args.append:
        from benchmarks.results import record

        summary = "; ".join(f"{n} {w}: SNR {m['snr']:.1f} dB, silence {m['silence_dbfs']:.0f} dBFS"
                            for n, w, m in rows if w != "init")
        record(f"- {datetime.date.today()} vae_recipe ({platform.node()}, {args.threads} thread): {summary}")


if __name__ == "__main__":
    main()
