"""Config of the 1D U-Net with self- and cross-attention (section ``model.unet``), owned by this package.

The defaults are the tiny CPU U-Net of the embedded demo; ``configs/model/stable_audio_1_0`` sets
the paper's 907M U-Net (width 256, multipliers [4, 4, 4, 5, 5], factors [1, 2, 2, 4], ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from sa_train.config.fields import param

ATTENTION_BACKENDS = ("auto", "xformers", "sdpa", "math")
POSITIONAL_ENCODINGS = ("none", "sinusoidal")
DOWNSAMPLE_PADDINGS = ("centered", "sat")
CONTEXT_MASK_MODES = ("exclude", "zero_kv")


@dataclass
class UNetConfig:
    """A 1D U-Net: levels of ResNet blocks and transformer blocks, a bottleneck, and the mirror path."""

    in_channels: int = param(16, "input (and output) channels: the autoencoder's latent channels, or audio channels", min=1)
    base_width: int = param(32, "base channel width; level widths are base_width x multipliers (paper: 256)", min=1)
    multipliers: List[int] = param(
        [1, 2, 2],
        "width multipliers: the first sets the input stem's width, entry i + 1 the width of level i, "
        "the last one is the bottleneck (paper: [4, 4, 4, 5, 5])",
        min=1,
    )
    factors: List[int] = param(
        [1, 2], "downsampling factor of each level (len = len(multipliers) - 1; paper: [1, 2, 2, 4])", min=1
    )
    resnet_blocks: int = param(2, "ResNet blocks per level (paper: 2)", min=1)
    attention_blocks: List[int] = param(
        [0, 1, 1],
        "transformer blocks (self-attn, cross-attn, feed-forward) per level, last = bottleneck (paper: [1, 3, 3, 3, 3])",
        min=0,
    )
    num_heads: int = param(4, "attention heads (paper: 16)", min=1)
    context_width: int = param(64, "width of the cross-attention context tokens (paper: 768)", min=1)
    feedforward_multiplier: int = param(2, "hidden width of the feed-forward = width x this (paper: 4)", min=1)
    time_embedding_width: int = param(
        128, "learned Fourier features of the diffusion time (sin + cos; even; paper: 256)", min=2
    )
    modulation_width: int = param(
        128,
        "width of the conditioning vector (time embedding + global conditioning) that every ResNet block "
        "maps to a scale and shift (paper: 1024 = 4 x base_width)",
        min=1,
    )
    norm_groups: int = param(
        8, "GroupNorm groups in the ResNet blocks and before each transformer stack; divides every width (paper: 16)", min=1
    )
    attention_backend: str = param(
        "auto",
        "'auto': xformers on CUDA when installed, else sdpa; 'xformers', 'sdpa' or 'math' to force one",
        choices=ATTENTION_BACKENDS,
    )
    positional_encoding: str = param(
        "none",
        "position information for self-attention: 'none' (the paper: position comes only from the "
        "convolutions' borders, which a shallow U-Net cannot see across its window) or 'sinusoidal' "
        "(fixed sin/cos of the frame index added to every self-attention input; no parameters)",
        choices=POSITIONAL_ENCODINGS,
    )
    attention_norm_groups: int = param(
        0,
        "GroupNorm groups before each transformer stack; 0 = norm_groups (sa_train's choice: one setting for all "
        "norms). stable-audio-tools' adp_cfg_1d always uses 32: set 32 to load or reproduce its checkpoints",
        min=0,
    )
    downsample_padding: str = param(
        "centered",
        "padding of the strided downsampling convs: 'centered' (factor frames each side, so every output frame is "
        "centred on its input frames) or 'sat' (stable-audio-tools: (k - f) - (k - f) // 2 left, (k - f) // 2 right, "
        "so the window starts (f + 1) // 2 - 1 frames later, one for factor 4; use it for checkpoints imported from "
        "stable-audio-tools)",
        choices=DOWNSAMPLE_PADDINGS,
    )
    context_mask: str = param(
        "exclude",
        "how padded context tokens are masked in cross-attention: 'exclude' (they get zero attention weight, as the "
        "paper asks) or 'zero_kv' (stable-audio-tools: their keys and values are zeroed, so they still take softmax "
        "weight; use it for checkpoints imported from stable-audio-tools)",
        choices=CONTEXT_MASK_MODES,
    )
    gradient_checkpointing: bool = param(False, "recompute each block's activations in backward to save memory")

    @property
    def downsampling(self) -> int:
        """Total downsampling of the U-Net (the product of factors)."""
        total = 1
        for f in self.factors:
            total *= f
        return total
