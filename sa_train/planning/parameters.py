"""Parameter counts per component, built on the meta device (no memory, no download).

Every count is taken from the real module classes, constructed under ``torch.device("meta")``, so
a 907M U-Net costs a second and no RAM. The one thing that cannot always be built is a pretrained
text encoder named by a hub id: its architecture lives in the hub's config.json. It is counted when
that config is on this machine (a local folder, or the Hugging Face cache), never fetched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from sa_train.config.schema import ExperimentConfig
from sa_train.models.conditioners.text import DEFAULT_NAMES
from sa_train.models.conditioners.timing import TimingEmbedding

logger = logging.getLogger(__name__)

# Hidden widths of the default checkpoints (RoBERTa-base text tower of LAION CLAP; T5-base d_model).
# Used only to decide whether a trainable projection to the context width exists when the
# checkpoint's own config.json is not on this machine.
KNOWN_ENCODER_WIDTHS = {"laion/clap-htsat-unfused": 768, "t5-base": 768}

# Roles of a component in the configured training stage.
TRAINED = "trained"
FROZEN = "frozen"
UNUSED = "unused"


@dataclass
class Component:
    """One part of the model: its parameter count (None = not countable offline) and its role."""

    name: str
    parameters: Optional[int]
    role: str  # TRAINED, FROZEN (on every GPU, no gradients) or UNUSED (not loaded in this stage)
    note: str = ""
    dtype_bytes: int = 4  # bytes per weight when FROZEN (fp32, or 2 for half-precision encoders)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class TextEncoderInfo:
    """What is known offline about the frozen text encoder."""

    name: str
    width: Optional[int]  # hidden width, None when unknown
    parameters: Optional[int]  # frozen parameters, None when not countable offline


def _local_hf_config(name: str):
    """The transformers config of ``name`` from a local folder or the local HF cache, else None."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as err:
        logger.debug("no local config for text encoder %s (%s)", name, err)
        return None


def text_encoder_info(cfg: ExperimentConfig) -> TextEncoderInfo:
    """Width and frozen parameter count of ``model.conditioning.text_encoder``, built on meta."""
    text = cfg.model.conditioning.text_encoder
    if text.kind == "embedded":
        from transformers import T5EncoderModel

        from sa_train.models.conditioners.embedded import embedded_t5_config

        with torch.device("meta"):
            model = T5EncoderModel(embedded_t5_config(text.embedded_width, text.embedded_layers))
        return TextEncoderInfo("embedded byte-level T5", text.embedded_width, count(model))

    name = text.name_or_path or DEFAULT_NAMES.get(text.kind, "")
    hf_config = _local_hf_config(name) if name else None
    if hf_config is None:
        return TextEncoderInfo(name, KNOWN_ENCODER_WIDTHS.get(name), None)
    if hf_config.model_type in ("clap", "clap_text_model"):
        from transformers import ClapTextModel

        text_config = hf_config.text_config if hf_config.model_type == "clap" else hf_config
        with torch.device("meta"):
            model = ClapTextModel(text_config)
        # The loader drops the pooler (its pooled output is unused), so it is not on the GPU.
        params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("pooler."))
        return TextEncoderInfo(name, text_config.hidden_size, params)
    if hf_config.model_type == "t5":
        from transformers import T5EncoderModel

        with torch.device("meta"):
            model = T5EncoderModel(hf_config)
        return TextEncoderInfo(name, hf_config.d_model, count(model))
    return TextEncoderInfo(name, getattr(hf_config, "hidden_size", None), None)


def conditioning_trainable(cfg: ExperimentConfig, encoder_width: Optional[int]) -> tuple[Optional[int], str]:
    """Trainable conditioning parameters: timing embeddings, learned null sequence, text projection.

    Mirrors :class:`~sa_train.models.conditioners.conditioner.Conditioner` without building its
    text encoder (a test checks the two agree). Returns (count or None, note).
    """
    cond, width = cfg.model.conditioning, cfg.model.unet.context_width
    with torch.device("meta"):
        timing = TimingEmbedding(cond.timing, width)
    total = count(timing)
    parts = [f"timing {total:,}"]
    if cfg.model.diffusion.null_embedding == "learned":
        null = (cond.text_encoder.max_length + timing.num_tokens) * width
        total += null
        parts.append(f"null sequence {null:,}")
    if encoder_width is None:
        return None, ", ".join(parts) + "; text projection unknown (encoder width not known offline)"
    if encoder_width != width:
        projection = encoder_width * width + width
        total += projection
        parts.append(f"text projection {projection:,}")
    return total, ", ".join(parts)


def components(cfg: ExperimentConfig) -> list[Component]:
    """Every component of the configured model with its count and its role in this stage."""
    from sa_train.models.unet.unet import UNet1D

    model, stage = cfg.model, cfg.training.stage
    out: list[Component] = []

    if model.autoencoder.kind == "vae":
        from sa_train.models.autoencoder.training_losses import build_discriminator
        from sa_train.models.autoencoder.vae import AutoencoderVAE

        with torch.device("meta"):
            vae = AutoencoderVAE(model.autoencoder)
        if stage == "autoencoder":
            role, note, decoder_note = TRAINED, "", ""
        elif cfg.data.latents is None:
            role, note = FROZEN, "on every GPU: encodes the audio of every micro-batch"
            decoder_note = "on every GPU with the encoder (the exported autoencoder is loaded whole)"
        else:
            role = UNUSED
            note = decoder_note = "not loaded: training reads pre-encoded latents (data.latents)"
        out.append(Component("autoencoder.encoder", count(vae.encoder) + count(vae.bottleneck), role, note))
        out.append(Component("autoencoder.decoder", count(vae.decoder), role, decoder_note))
        if stage == "autoencoder":
            with torch.device("meta"):
                disc = build_discriminator(model.autoencoder)
            out.append(Component("discriminator", count(disc), TRAINED, "its own optimizer and ZeRO engine"))

    diffusion_role = TRAINED if stage == "diffusion" else UNUSED
    global_width = 2 * model.unet.context_width if model.conditioning.timing.global_condition else None
    with torch.device("meta"):
        unet = UNet1D(model.unet, global_cond_width=global_width)
    out.append(Component("unet", count(unet), diffusion_role))

    info = text_encoder_info(cfg)
    trainable, note = conditioning_trainable(cfg, info.width)
    out.append(Component("conditioning.trainable", trainable, diffusion_role, note))
    if stage == "autoencoder":
        note = "not loaded in the autoencoder stage"
        out.append(Component("conditioning.text_encoder", info.parameters, UNUSED, note))
    else:
        half = cfg.model.conditioning.text_encoder.half_precision
        note = f"loaded from {info.name}"
        if info.parameters is None:
            note += "; not counted: its config.json is not on this machine (never downloaded here)"
        out.append(Component("conditioning.text_encoder", info.parameters, FROZEN, note, 2 if half else 4))
    return out

