"""Shared by the interop tests: small SAT autoencoder configs, random weights, SAT's checkpoint
formats, and the autoencoder comparison."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

TOLERANCE = 1e-5


def dac_config(sample_size: int = 4096) -> dict:
    return {
        "model_type": "autoencoder",
        "sample_rate": 44100,
        "sample_size": sample_size,
        "audio_channels": 2,
        "model": {
            "encoder": {"type": "dac", "config": {"in_channels": 2, "latent_dim": 8, "d_model": 4, "strides": [2, 4]}},
            "decoder": {"type": "dac", "config": {"latent_dim": 4, "out_channels": 2, "rates": [4, 2], "channels": 16}},
            "bottleneck": {"type": "vae"},
            "latent_dim": 4,
            "downsampling_ratio": 8,
            "io_channels": 2,
        },
    }


def oobleck_config() -> dict:
    common = {"channels": 4, "c_mults": [1, 2], "strides": [2, 4], "use_snake": True}
    return {
        "model_type": "autoencoder",
        "sample_rate": 44100,
        "sample_size": 4096,
        "audio_channels": 2,
        "model": {
            "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 8, **common}},
            "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": 4, "final_tanh": False, **common}},
            "bottleneck": {"type": "vae"},
            "latent_dim": 4,
            "downsampling_ratio": 8,
            "io_channels": 2,
        },
    }


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter away from its initial value (Snake alphas start at one, biases at zero)."""
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model.eval()


def build_sat_autoencoder(sat, config: dict, seed: int = 0):
    torch.manual_seed(seed)
    return perturb(sat.autoencoders.create_autoencoder_from_config(config), seed)


def write_checkpoint(path, weights: dict, kind: str, ema: dict | None = None) -> None:
    """Save ``weights`` the way SAT does: 'lightning', 'unwrapped' (.ckpt) or 'safetensors'."""
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    elif kind == "unwrapped":
        torch.save({"state_dict": weights}, str(path))
    else:
        state = {f"autoencoder.{k}": v for k, v in weights.items()}
        state.update({f"autoencoder_ema.ema_model.{k}": v for k, v in (ema or {}).items()})
        torch.save({"state_dict": state, "global_step": 7, "epoch": 1}, str(path))


def compare_autoencoders(sat_model, ours, seed: int = 1, samples: int = 64) -> tuple[float, float]:
    """Max |difference| of the posterior mean and of the decoding of the same input."""
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(2, 2, samples, generator=generator)
    with torch.no_grad():
        sat_mean = sat_model.encoder(audio).chunk(2, dim=1)[0]
        our_mean = ours.encode(audio)
        latents = torch.randn(sat_mean.shape, generator=generator)
        decode_diff = (sat_model.decoder(latents) - ours.decode(latents)).abs().max().item()
    return (sat_mean - our_mean).abs().max().item(), decode_diff


class SATMeanCodec:
    """A SAT autoencoder seen through sa_train's interface: encode = the posterior mean (SAT's own
    encode samples), decode = its decoder."""

    def __init__(self, model) -> None:
        self.model = model.eval()

    def encode(self, audio):
        return self.model.encoder(audio).chunk(2, dim=1)[0]

    def decode(self, latents):
        return self.model.decoder(latents)
