"""Parameter names of sa_train models -> those of stable-audio-tools (SAT), per model type.

Each map is written in one direction, sa_train -> SAT, and applied to the keys of an sa_train
model built from the translated config, so every sa_train parameter is accounted for; import reads
the map forwards, export backwards. A SAT tensor that no sa_train parameter maps to is an error,
never silently dropped.

Weight-normalised convs: sa_train uses torch's parametrization (``parametrizations.weight.original0``
= g, ``original1`` = v); SAT the older hook (``weight_g``, ``weight_v``). The DAC wrapper's 1x1
projection is a plain conv in SAT: its weight W becomes g = |W| (per output channel) and v = W,
which give the same W back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

Weights = dict[str, torch.Tensor]

WN_G = ".parametrizations.weight.original0"
WN_V = ".parametrizations.weight.original1"


@dataclass(frozen=True)
class Source:
    """Where an sa_train tensor comes from in SAT: a key, and how to convert ('g' / 'v' of a plain weight)."""

    key: str
    transform: Optional[str] = None


def _weight_norm_suffix(key: str) -> str:
    if key.endswith(WN_G):
        return key[: -len(WN_G)] + ".weight_g"
    if key.endswith(WN_V):
        return key[: -len(WN_V)] + ".weight_v"
    return key


def _rename(key: str, rules: Iterable[tuple[str, str]]) -> str:
    """Apply the first matching (regex, replacement) of ``rules`` to the start of ``key``."""
    for pattern, replacement in rules:
        new, count = re.subn("^" + pattern, replacement, key)
        if count:
            return new
    raise KeyError(key)


# --- autoencoders -------------------------------------------------------------------------------

def dac_source(key: str, encoder_blocks: int, decoder_blocks: int) -> Source:
    """sa_train AutoencoderVAE key -> SAT AudioAutoencoder key with a ``dac`` encoder and decoder."""
    n, m = encoder_blocks, decoder_blocks
    if key.startswith("encoder.projection."):
        if key.endswith(WN_G):
            return Source("encoder.proj_out.weight", "g")
        if key.endswith(WN_V):
            return Source("encoder.proj_out.weight", "v")
        return Source(key.replace("encoder.projection.", "encoder.proj_out.", 1))
    rules = [
        (r"encoder\.input_conv\.", "encoder.encoder.block.0."),
        (r"encoder\.blocks\.(\d+)\.", lambda mt: f"encoder.encoder.block.{int(mt.group(1)) + 1}."),
        (r"encoder\.output_activation\.", f"encoder.encoder.block.{n + 1}."),
        (r"encoder\.output_conv\.", f"encoder.encoder.block.{n + 2}."),
        (r"decoder\.input_conv\.", "decoder.decoder.model.0."),
        (r"decoder\.blocks\.(\d+)\.", lambda mt: f"decoder.decoder.model.{int(mt.group(1)) + 1}."),
        (r"decoder\.output_activation\.", f"decoder.decoder.model.{m + 1}."),
        (r"decoder\.output_conv\.", f"decoder.decoder.model.{m + 2}."),
    ]
    return Source(_weight_norm_suffix(_rename(key, rules)))


def oobleck_source(key: str, encoder_blocks: int, decoder_blocks: int) -> Source:
    """sa_train AutoencoderVAE key (Oobleck layout) -> SAT AudioAutoencoder key with ``oobleck`` parts.

    Residual units are ``layers`` in SAT (``block`` in sa_train); SnakeBeta's alpha and beta keep their names.
    """
    n, m = encoder_blocks, decoder_blocks
    rules = [
        (r"encoder\.input_conv\.", "encoder.layers.0."),
        (r"encoder\.blocks\.(\d+)\.block\.", lambda mt: f"encoder.layers.{int(mt.group(1)) + 1}.layers."),
        (r"encoder\.output_activation\.", f"encoder.layers.{n + 1}."),
        (r"encoder\.output_conv\.", f"encoder.layers.{n + 2}."),
        (r"decoder\.input_conv\.", "decoder.layers.0."),
        (r"decoder\.blocks\.(\d+)\.block\.", lambda mt: f"decoder.layers.{int(mt.group(1)) + 1}.layers."),
        (r"decoder\.output_activation\.", f"decoder.layers.{m + 1}."),
        (r"decoder\.output_conv\.", f"decoder.layers.{m + 2}."),
    ]
    renamed = _rename(key, rules)
    # Inside a block, a residual unit's Sequential is ``block`` in sa_train and ``layers`` in SAT.
    renamed = re.sub(r"(layers\.\d+\.layers\.\d+\.)block\.", r"\1layers.", renamed)
    return Source(_weight_norm_suffix(renamed))


# --- U-Net (adp_cfg_1d) -------------------------------------------------------------------------

_RESNET = [
    (r"norm1\.", "block1.groupnorm."),
    (r"conv1\.", "block1.project."),
    (r"to_scale_shift\.1\.", "to_scale_shift.to_scale_shift.1."),
    (r"norm2\.", "block2.groupnorm."),
    (r"conv2\.", "block2.project."),
    (r"skip\.", "to_out."),
]

_TRANSFORMER = [
    (r"norm\.", "to_in.0."),
    (r"proj_in\.", "to_in.1."),
    (r"proj_out\.", "to_out.1."),
    (r"blocks\.(\d+)\.self_attention\.to_out\.", r"blocks.\1.attention.attention.to_out."),
    (r"blocks\.(\d+)\.self_attention\.", r"blocks.\1.attention."),
    (r"blocks\.(\d+)\.cross_attention\.to_out\.", r"blocks.\1.cross_attention.attention.to_out."),
    (r"blocks\.(\d+)\.cross_attention\.", r"blocks.\1.cross_attention."),
    (r"blocks\.(\d+)\.feed_forward\.", r"blocks.\1.feed_forward."),
]


def unet_source(key: str, levels: int) -> Source:
    """sa_train UNet1D key (without ``unet.``) -> SAT UNetCFG1d key (without ``model.model.``)."""
    if key == "mapping.time_embedding.0.frequencies":
        return Source("to_time.0.0.weights")

    def up(i: str) -> int:  # SAT lists the up path from the bottleneck out: sa_train's level i is its levels-1-i
        return levels - 1 - int(i)

    # (pattern, replacement, rules for the rest of the key)
    outer = [
        (r"mapping\.time_embedding\.1\.", lambda mt: "to_time.0.1.", None),
        (r"mapping\.global_embedding\.0\.", lambda mt: "to_features.0.", None),
        (r"mapping\.mlp\.(0|2)\.", lambda mt: f"to_mapping.{mt[1]}.", None),
        (r"stem\.", lambda mt: "to_in.block.", _RESNET),
        (r"head\.", lambda mt: "to_out.block.", _RESNET),
        (r"down\.(\d+)\.resample\.conv\.", lambda mt: f"downsamples.{mt[1]}.downsample.", None),
        (r"down\.(\d+)\.resnets\.(\d+)\.", lambda mt: f"downsamples.{mt[1]}.blocks.{mt[2]}.", _RESNET),
        (r"down\.(\d+)\.transformer\.", lambda mt: f"downsamples.{mt[1]}.transformer.", _TRANSFORMER),
        (r"bottleneck\.resnets\.0\.", lambda mt: "bottleneck.pre_block.", _RESNET),
        (r"bottleneck\.resnets\.1\.", lambda mt: "bottleneck.post_block.", _RESNET),
        (r"bottleneck\.transformer\.", lambda mt: "bottleneck.transformer.", _TRANSFORMER),
        (r"up\.(\d+)\.resample\.conv\.", lambda mt: f"upsamples.{up(mt[1])}.upsample.", None),
        (r"up\.(\d+)\.resnets\.(\d+)\.", lambda mt: f"upsamples.{up(mt[1])}.blocks.{mt[2]}.", _RESNET),
        (r"up\.(\d+)\.transformer\.", lambda mt: f"upsamples.{up(mt[1])}.transformer.", _TRANSFORMER),
    ]
    for pattern, replacement, inner in outer:
        match = re.match(pattern, key)
        if match:
            rest = key[match.end():]
            return Source(replacement(match) + (_rename(rest, inner) if inner else rest))
    raise KeyError(key)


def conditioner_source(key: str, text_id: str, start_id: str, total_id: str) -> Source:
    """sa_train Conditioner key (without ``conditioner.``) -> SAT diffusion-model key."""
    rules = [
        (r"text_encoder\.projection\.", f"conditioner.conditioners.{text_id}.proj_out."),
        (r"timing\.start\.table\.", f"conditioner.conditioners.{start_id}.int_embedder."),
        (r"timing\.total\.table\.", f"conditioner.conditioners.{total_id}.int_embedder."),
        (r"timing\.start\.", f"conditioner.conditioners.{start_id}.embedder."),
        (r"timing\.total\.", f"conditioner.conditioners.{total_id}.embedder."),
        (r"null_context$", "model.model.fixed_embedding.embedding.weight"),
    ]
    return Source(_rename(key, rules))


# --- applying a map -----------------------------------------------------------------------------

def _plain_to_weight_norm(weight: torch.Tensor, part: str) -> torch.Tensor:
    if part == "v":
        return weight.clone()
    return torch.norm_except_dim(weight, 2, 0)


def gather(sources: dict[str, Source], sat: Weights, where: str) -> Weights:
    """sa_train weights from SAT ones by ``sources`` (sa key -> Source); every SAT key must be used."""
    missing = sorted({s.key for s in sources.values() if s.key not in sat})
    unused = sorted(set(sat) - {s.key for s in sources.values()})
    problems = []
    if missing:
        problems.append(f"missing ({len(missing)}): {', '.join(missing[:8])}")
    if unused:
        problems.append(f"not used by the sa_train model ({len(unused)}): {', '.join(unused[:8])}")
    if problems:
        raise ValueError(
            f"the {where} weights of the checkpoint do not match its model config: " + "; ".join(problems)
            + "; check that the checkpoint and --config belong together"
        )
    out: Weights = {}
    for sa_key, source in sources.items():
        value = sat[source.key]
        out[sa_key] = _plain_to_weight_norm(value, source.transform) if source.transform else value.clone()
    return out


def scatter(sources: dict[str, Source], weights: Weights) -> Weights:
    """SAT weights from sa_train ones: the inverse of :func:`gather`."""
    out: Weights = {}
    for sa_key, source in sources.items():
        if source.transform == "g":
            continue  # rebuilt together with its "v"
        if source.transform == "v":
            g = weights[sa_key[: -len(WN_V)] + WN_G]
            out[source.key] = torch._weight_norm(weights[sa_key], g, 0).detach().clone()
        else:
            out[source.key] = weights[sa_key].detach().clone()
    return out
