"""Config of the conditioners (section ``model.conditioning``): the frozen text encoder and the
timing (seconds_start, seconds_total) embeddings, owned by this package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from sa_train.config.fields import ConfigError, param, section

TEXT_ENCODER_KINDS = ("embedded", "clap", "clap_laion", "t5")
TIMING_KINDS = ("per_second", "fourier", "none")


@dataclass
class TextEncoderConfig:
    """A frozen text encoder whose hidden states of one layer become cross-attention tokens."""

    kind: str = param(
        "embedded",
        "'embedded': the built-in byte-level T5 encoder (no download); 'clap': any CLAP checkpoint; "
        "'clap_laion': the public LAION CLAP; 't5': a T5 encoder",
        choices=TEXT_ENCODER_KINDS,
    )
    name_or_path: Optional[str] = param(
        None,
        "hub id or local folder for from_pretrained; default per kind (clap_laion: "
        "laion/clap-htsat-unfused, t5: t5-base); required for 'clap'",
    )
    layer: int = param(
        -2,
        "hidden-state layer used as features (-1 = last, -2 = penultimate, as the paper for CLAP). "
        "stable-audio-tools' T5 conditioner takes T5's last hidden state (-1, after its final norm): "
        "sa-train import-sat sets -1 for T5",
    )
    max_length: int = param(64, "tokens per prompt (padded and truncated); paper: 77", min=1)
    half_precision: bool = param(False, "keep the frozen weights in float16 (GPU) to save memory")
    local_files_only: bool = param(False, "never reach the hub, even for a hub id (offline clusters)")
    embedded_width: int = param(128, "hidden width of the embedded encoder", min=8)
    embedded_layers: int = param(2, "transformer layers of the embedded encoder", min=1)
    embedded_seed: int = param(0, "seed that initialises the embedded encoder's frozen weights")


@dataclass
class TimingConfig:
    """Embeddings of seconds_start and seconds_total, one token each after the text tokens."""

    kind: str = param(
        "per_second",
        "'per_second': a learned embedding per integer second (paper); 'fourier': learned Fourier "
        "features of seconds / max_seconds and a linear layer; 'none': no timing conditioning",
        choices=TIMING_KINDS,
    )
    max_seconds: int = param(512, "seconds are clamped to 0..max_seconds (paper: 512)", min=1)
    fourier_features: int = param(
        256, "'fourier' only: learned Fourier features per quantity (half sin, half cos; even)", min=2
    )
    global_condition: bool = param(
        False, "also feed the timing embeddings as a global conditioning vector (added to the time embedding)"
    )


@dataclass
class ConditioningConfig:
    """Everything the U-Net is conditioned on, besides the diffusion time."""

    text_encoder: TextEncoderConfig = section(TextEncoderConfig, "the frozen text encoder")
    timing: TimingConfig = section(TimingConfig, "the timing embeddings")


def check_conditioning(cfg: ConditioningConfig, key: str = "model.conditioning") -> None:
    """Cross-field rules of this section; raises ConfigError naming the key and the fix.

    Called by the builders, and meant to be called from the config validator too, so that a bad
    combination fails before any worker starts.
    """
    text, timing = cfg.text_encoder, cfg.timing
    if text.kind == "clap" and not text.name_or_path:
        raise ConfigError(
            f"{key}.text_encoder.kind=clap needs {key}.text_encoder.name_or_path (a hub id or a local "
            "folder of a CLAP checkpoint); use kind=clap_laion for the public LAION CLAP"
        )
    if timing.global_condition and timing.kind == "none":
        raise ConfigError(
            f"{key}.timing.global_condition=true needs timing embeddings, but {key}.timing.kind=none; "
            "set global_condition=false or choose kind per_second or fourier"
        )
    if timing.fourier_features % 2:
        raise ConfigError(
            f"{key}.timing.fourier_features={timing.fourier_features} must be even (half sin, half cos)"
        )
