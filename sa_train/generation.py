"""Audio from an exported diffusion model: condition, sample latents with CFG, decode, trim.

The sampler is a pure function over a denoiser (sa_train.diffusion.samplers); this module only
wires the exported models to it and writes WAV files.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
from torch import nn

from sa_train.config import ExperimentConfig
from sa_train.diffusion.config import SamplingConfig
from sa_train.diffusion.denoiser import CFGDenoiser, VDenoiser
from sa_train.diffusion.samplers import generate as sample
from sa_train.models.diffusion_model import DiffusionModel

logger = logging.getLogger(__name__)


@dataclass
class GeneratedClip:
    prompt: str
    seconds_start: float
    seconds_total: float
    audio: np.ndarray  # (channels, samples) float32
    sample_rate: int


class Generator:
    """A diffusion model plus the autoencoder that decodes its latents (None for waveform models)."""

    def __init__(self, model: DiffusionModel, autoencoder: Optional[nn.Module], cfg: ExperimentConfig,
                 device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.autoencoder = autoencoder.to(device).eval() if autoencoder is not None else None
        self.cfg = cfg
        self.device = torch.device(device)

    @classmethod
    def from_exported(cls, path: str | Path, device: str = "cpu", weights: str = "ema",
                      allow_mismatch: bool = False) -> "Generator":
        from sa_train.export import load_exported

        exported = load_exported(path, weights=weights, expect_stage="diffusion", allow_mismatch=allow_mismatch)
        cfg = exported.cfg
        autoencoder = None
        if cfg.model.autoencoder.kind == "vae":
            autoencoder = load_exported(cfg.model.autoencoder.pretrained, expect_stage="autoencoder",
                                        allow_mismatch=allow_mismatch).model
        return cls(exported.model, autoencoder, cfg, device)

    @property
    def frames(self) -> int:
        return self.cfg.data.window_samples // self.cfg.model.autoencoder.downsampling

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        seconds_total: Sequence[float],
        seconds_start: Optional[Sequence[float]] = None,
        sampling: Optional[SamplingConfig] = None,
        trim: bool = True,
        callback: Optional[Callable[[dict], None]] = None,
    ) -> list[GeneratedClip]:
        """One clip per prompt; the model always generates its whole window, trimmed to seconds_total.

        The timing embeddings see the seconds as training saw them for a file of that length
        (seconds_total rounded up, seconds_start down; see
        :func:`sa_train.models.conditioners.timing.conditioning_seconds`): 2.5 s is conditioned
        like the 2-3 s files that taught the model to end by 3 s, and the clip is trimmed at 2.5 s.
        """
        sampling = sampling or self.cfg.model.sampling
        n = len(prompts)
        starts = list(seconds_start) if seconds_start is not None else [0.0] * n
        if len(seconds_total) != n or len(starts) != n:
            raise ValueError(f"got {n} prompts but {len(seconds_total)} seconds_total and {len(starts)} seconds_start")
        conditioner = self.model.conditioner
        cond = self.model.condition(
            list(prompts), torch.tensor(starts, device=self.device), torch.tensor(list(seconds_total), device=self.device)
        )
        uncond = conditioner.null_conditioning(n, cond.context_mask).to(self.device)
        denoiser = VDenoiser(lambda x, t, cond: self.model.predict_v(x, t, cond))
        guided = CFGDenoiser(denoiser, {"cond": cond}, {"cond": uncond}, sampling.cfg_scale)
        channels = self.cfg.model.unet.in_channels
        generator = torch.Generator().manual_seed(sampling.seed)
        latents = sample(guided, (n, channels, self.frames), sampling, generator=generator, callback=callback,
                         device=self.device)
        audio = self.decode(latents)
        sr = self.cfg.data.sample_rate
        clips = []
        for i in range(n):
            clip = audio[i]
            if trim:
                clip = clip[:, : min(clip.shape[-1], int(math.ceil(seconds_total[i] * sr)))]
            clips.append(GeneratedClip(prompts[i], starts[i], seconds_total[i], clip.float().cpu().numpy(), sr))
        return clips

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if self.autoencoder is None:
            return latents.clamp(-1, 1)
        chunk = self.cfg.model.autoencoder.decode_chunk_frames
        if chunk and latents.shape[-1] > chunk:
            return self.autoencoder.decode_chunked(latents, chunk)
        return self.autoencoder.decode(latents)


def write_wav(clip: GeneratedClip, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), clip.audio.T, clip.sample_rate, subtype="PCM_16")
    return path


def slug(text: str, limit: int = 40) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")
    return "_".join(filter(None, keep.split("_")))[:limit] or "clip"


def write_clips(clips: Sequence[GeneratedClip], out: Path, first_index: int = 0) -> list[dict]:
    """WAV files plus their manifest rows (path, prompt, seconds_total, seconds_start), as `sa-train
    evaluate` reads them; returns the rows (the caller writes manifest.jsonl once, see write_manifest)."""
    rows = []
    for i, clip in enumerate(clips):
        path = write_wav(clip, Path(out) / f"{first_index + i:04d}_{slug(clip.prompt)}.wav")
        rows.append({"path": path.name, "prompt": clip.prompt, "seconds_total": clip.seconds_total,
                     "seconds_start": clip.seconds_start})
    return rows


def write_manifest(rows: Sequence[dict], out: Path) -> Path:
    import json

    path = Path(out) / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
