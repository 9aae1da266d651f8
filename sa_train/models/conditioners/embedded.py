"""The embedded default text encoder: a small frozen T5 encoder over UTF-8 bytes, built from a seed.

It needs no download and no vocabulary file, so the demo runs anywhere. Be clear about what it is:
its weights are RANDOM (drawn from ``embedded_seed``) and never trained. Its features are a fixed,
deterministic function of a prompt's bytes, so different prompts give different token sequences
and a diffusion model can learn to map the prompts (and the words) it has seen in training to
sounds. It has no semantics: it does not know that "dog" and "puppy" are related, it will not
generalise to unseen synonyms or paraphrases, and a typo is simply a different prompt. For real
text understanding use kind ``clap``, ``clap_laion`` or ``t5``.

Determinism: the weights are drawn parameter by parameter, in sorted-name order, from a CPU
``torch.Generator`` seeded with ``embedded_seed`` (never from the global RNG, whose state is left
untouched), so the same seed gives identical weights on any machine.
"""

from __future__ import annotations

from typing import Sequence

import torch

from sa_train.models.conditioners.config import TextEncoderConfig
from sa_train.models.conditioners.text import TextEncoder

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2  # reserved; every byte has its own id, so it never occurs
BYTE_OFFSET = 3  # byte b has id b + 3
VOCAB_SIZE = 256 + BYTE_OFFSET
HEAD_WIDTH = 32  # width per attention head; heads = embedded_width // 32 (at least one)


class ByteTokenizer:
    """UTF-8 bytes as token ids, then EOS; padded with PAD to ``max_length`` and truncated (bytes,
    so a multi-byte character may be cut; harmless for a byte-level model)."""

    def __call__(self, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: B strings -> (input_ids: (B, max_length) long, mask: (B, max_length) bool)."""
        ids = torch.full((len(prompts), max_length), PAD_ID, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise ValueError(f"prompt {row} is a {type(prompt).__name__}, not a string: {prompt!r}")
            body = [b + BYTE_OFFSET for b in prompt.encode("utf-8")][: max_length - 1]
            ids[row, : len(body) + 1] = torch.tensor(body + [EOS_ID], dtype=torch.long)
        return ids, ids != PAD_ID


def embedded_t5_config(width: int, layers: int):
    """The T5Config of the embedded encoder (dropout off: features must be a fixed function)."""
    from transformers import T5Config

    return T5Config(
        vocab_size=VOCAB_SIZE,
        d_model=width,
        d_kv=HEAD_WIDTH,
        num_heads=max(1, width // HEAD_WIDTH),
        d_ff=2 * width,
        num_layers=layers,
        feed_forward_proj="relu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
    )


def _init_std(name: str, shape: torch.Size, config) -> float:
    """Standard deviation per parameter, after T5's own scheme (its attention has no 1/sqrt(d_kv),
    so the query weights carry it)."""
    if name.endswith("relative_attention_bias.weight"):
        return config.d_model**-0.5
    if name == "shared.weight":
        return 1.0
    fan_in = shape[-1]
    std = fan_in**-0.5
    if name.endswith("SelfAttention.q.weight"):
        std *= config.d_kv**-0.5
    return std


@torch.no_grad()
def init_deterministic(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter from a generator seeded with ``seed`` (layer norms: ones)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, param in sorted(model.named_parameters()):
        if "layer_norm" in name:
            param.fill_(1.0)
            continue
        values = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        param.copy_(values * _init_std(name, param.shape, model.config))


def build_embedded_model(cfg: TextEncoderConfig):
    """The frozen byte-level T5EncoderModel of ``cfg`` (embedded_width, embedded_layers, embedded_seed)."""
    from transformers import T5EncoderModel

    config = embedded_t5_config(cfg.embedded_width, cfg.embedded_layers)
    # Construction draws a throw-away random init from the global RNG; keep the caller's RNG intact.
    with torch.random.fork_rng(devices=[]):
        model = T5EncoderModel(config)
    init_deterministic(model, cfg.embedded_seed)
    return model.eval()


def build_embedded_text_encoder(cfg: TextEncoderConfig, context_width: int) -> TextEncoder:
    """The embedded encoder wrapped as a :class:`TextEncoder` projecting to ``context_width``."""
    return TextEncoder(
        build_embedded_model(cfg),
        ByteTokenizer(),
        encoder_width=cfg.embedded_width,
        context_width=context_width,
        layer=cfg.layer,
        max_length=cfg.max_length,
        half_precision=cfg.half_precision,
        description=(
            f"embedded:bytes-t5(width={cfg.embedded_width}, layers={cfg.embedded_layers}, "
            f"seed={cfg.embedded_seed})"
        ),
    )
