"""How well an autoencoder reconstructs: SI-SDR on real clips, and the level it decodes silence to.

A VAE whose latent space has collapsed decodes every input, silence included, to the same noise:
its SI-SDR is far below 0 dB and its "silence" is audible. Both figures are what a user checks
before training a diffusion model on its latents.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn


def si_sdr_db(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio (dB) of one channel: ``(samples,)`` each."""
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    scale = float(np.dot(estimate, reference) / (np.dot(reference, reference) + eps))
    target = scale * reference
    noise = estimate - target
    return 10.0 * math.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps))


def level_dbfs(audio: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); -inf for digital silence."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


@torch.no_grad()
def reconstruction_figures(
    vae: nn.Module,
    clips: Sequence[np.ndarray],
    downsampling: int,
    kinds: Optional[Sequence[str]] = None,
    sample_rate: int = 44100,
) -> dict:
    """Mean SI-SDR (dB) of ``vae``'s reconstructions of ``clips`` (each ``(channels, samples)``),
    over clips and channels, and the level (dBFS) it decodes one second of digital silence to.

    With ``kinds`` (the synthetic dataset's kind of each clip: tone, chord, noise, drums), also
    ``vae_kind_pass_rate``: the share of reconstructions that the ``synth_kind`` tagger, the one the
    prompt-adherence figure uses, still recognises as their clip's kind. Generated audio passes
    through the same decoder, so a kind the VAE loses here is one that generation is unlikely to
    show either (an estimate on these clips, not a bound: other clips of a kind may survive);
    ``vae_kinds_lost`` names the kinds of the clips it missed.

    Clips are padded to a multiple of ``downsampling`` and the reconstruction cut back; the
    posterior mean is decoded (no sampling), as ``sa-train encode`` does.
    """
    if kinds is not None and len(kinds) != len(clips):
        raise ValueError(f"reconstruction_figures got {len(kinds)} kinds for {len(clips)} clips; give one per clip")
    vae = vae.eval()
    scores, recognised, lost = [], [], []
    tagger = None
    if kinds is not None:
        from sa_train.evaluation.embedders.spectral import KIND_CLASSES, SynthKindTagger

        tagger = SynthKindTagger()
    for i, clip in enumerate(clips):
        samples = clip.shape[-1]
        padded = -(-samples // downsampling) * downsampling
        audio = torch.zeros(1, clip.shape[0], padded)
        audio[0, :, :samples] = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
        out = vae.decode(vae.encode(audio))[0, :, :samples].numpy()
        scores += [si_sdr_db(out[c], clip[c]) for c in range(clip.shape[0])]
        if tagger is not None:
            predicted = KIND_CLASSES[int(np.argmax(tagger.class_probabilities(out, sample_rate)))]
            recognised.append(predicted == kinds[i])
            if predicted != kinds[i]:
                lost.append(kinds[i])
    channels = clips[0].shape[0] if clips else 2
    silence = torch.zeros(1, channels, -(-sample_rate // downsampling) * downsampling)
    decoded_silence = vae.decode(vae.encode(silence))[0].numpy()
    figures = {"vae_si_sdr_db": float(np.mean(scores)) if scores else float("nan"),
               "vae_silence_dbfs": level_dbfs(decoded_silence)}
    if tagger is not None:
        figures["vae_kind_pass_rate"] = float(np.mean(recognised)) if recognised else float("nan")
        figures["vae_kinds_lost"] = sorted(set(lost))
    return figures
