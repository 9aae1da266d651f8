"""Frozen text encoders whose hidden states of one layer become cross-attention tokens.

The paper conditions on the penultimate layer of a frozen CLAP text tower (RoBERTa, 77 tokens),
keeping the attention mask so padded tokens receive no attention. ``TextEncoder`` wraps any
Hugging Face encoder that returns ``hidden_states`` (CLAP's text tower, T5's encoder, or the
embedded byte-level encoder of :mod:`.embedded`) together with its tokenizer, and adds a trainable
projection to the U-Net's context width when the widths differ.

The pretrained encoder is deliberately NOT a registered submodule: ``parameters()`` and
``state_dict()`` of the conditioner then hold only what is trained, so optimizers, DeepSpeed
(ZeRO partitioning), EMA and checkpoints never see the frozen weights. The config names the
encoder, and it is reloaded from there. ``_apply`` is overridden so ``.to(device)`` still moves it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Sequence

import torch
from torch import nn

from sa_train.config.fields import ConfigError
from sa_train.models.conditioners.config import TextEncoderConfig

logger = logging.getLogger(__name__)

KEY = "model.conditioning.text_encoder"
DEFAULT_NAMES = {"clap_laion": "laion/clap-htsat-unfused", "t5": "t5-base"}

# prompts, max_length -> (input_ids: (batch, max_length) long, mask: (batch, max_length) bool)
Tokenize = Callable[[Sequence[str], int], "tuple[torch.Tensor, torch.Tensor]"]


class TextEncoder(nn.Module):
    """A frozen encoder + tokenizer, and a trainable projection to the context width.

    ``forward(prompts) -> (tokens: (batch, max_length, context_width) float, mask: (batch, max_length) bool)``.
    Tokens at padded positions are zeroed (the mask is the contract, but zeros make the features
    independent of whatever the encoder computes for padding).
    """

    def __init__(
        self,
        encoder: nn.Module,
        tokenize: Tokenize,
        *,
        encoder_width: int,
        context_width: int,
        layer: int,
        max_length: int,
        half_precision: bool = False,
        description: str = "",
    ) -> None:
        super().__init__()
        num_layers = _num_layers(encoder)
        # hidden_states holds the embeddings plus one entry per layer: num_layers + 1 entries.
        if not -(num_layers + 1) <= layer <= num_layers:
            raise ConfigError(
                f"{KEY}.layer={layer} is out of range for {description or 'this encoder'} with "
                f"{num_layers} layers; use -{num_layers + 1}..{num_layers} (-1 = last, -2 = penultimate)"
            )
        encoder.requires_grad_(False)
        encoder.eval()
        encoder.to(torch.float16 if half_precision else torch.float32)
        # Stored outside nn.Module's registry on purpose (see the module docstring).
        object.__setattr__(self, "_frozen_encoder", encoder)
        self._tokenize = tokenize
        self.layer = layer
        self.max_length = max_length
        self.encoder_width = encoder_width
        self.context_width = context_width
        self.description = description
        self.projection: nn.Module = (
            nn.Linear(encoder_width, context_width) if encoder_width != context_width else nn.Identity()
        )
        # Follows the module's device and working dtype through .to()/.half(); never saved.
        self.register_buffer("_placement", torch.zeros(()), persistent=False)

    @property
    def frozen_encoder(self) -> nn.Module:
        """The pretrained encoder (frozen, not part of parameters() or state_dict())."""
        return self._frozen_encoder

    @property
    def device(self) -> torch.device:
        return self._placement.device

    def frozen_parameter_count(self) -> int:
        """Parameters of the frozen encoder (not counted by ``parameters()``)."""
        return sum(p.numel() for p in self._frozen_encoder.parameters())

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # Move the frozen encoder along, but keep its own dtype (float16 or float32): a module-wide
        # .bfloat16() by a mixed-precision engine must not silently re-cast frozen weights.
        self._frozen_encoder.to(device=self._placement.device)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self._frozen_encoder.eval()  # no dropout in frozen features, ever
        return self

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prompts`` -> (input_ids: (batch, max_length) long, mask: (batch, max_length) bool), on CPU."""
        return self._tokenize(list(prompts), self.max_length)

    @torch.no_grad()
    def encode_frozen(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of ``self.layer`` before the projection.

        Returns (features: (batch, max_length, encoder_width) in the module's dtype,
        mask: (batch, max_length) bool).
        """
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings, one per example, not a single string")
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self._frozen_encoder(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        features = out.hidden_states[self.layer].to(self._placement.dtype)
        features = features * mask.unsqueeze(-1).to(features.dtype)
        return features, mask

    def forward(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts: list of B strings -> (tokens: (B, max_length, context_width), mask: (B, max_length) bool)."""
        features, mask = self.encode_frozen(prompts)
        tokens = self.projection(features)
        return tokens * mask.unsqueeze(-1).to(tokens.dtype), mask

    def extra_repr(self) -> str:
        return (
            f"frozen={self.description!r}, layer={self.layer}, max_length={self.max_length}, "
            f"encoder_width={self.encoder_width}, context_width={self.context_width}"
        )


def _num_layers(encoder: nn.Module) -> int:
    config = getattr(encoder, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    assert isinstance(n, int), "text encoders are transformers models with config.num_hidden_layers"
    return n


class HFTokenize:
    """A transformers tokenizer as a :data:`Tokenize`: pad to max_length, truncate, keep the mask.

    A class rather than a closure so that a built conditioner can be pickled (Ray object store).
    """

    def __init__(self, tokenizer) -> None:
        if tokenizer.pad_token is None:
            raise ValueError(f"the tokenizer of {KEY}.name_or_path has no pad token; it cannot pad prompts")
        self.tokenizer = tokenizer

    def __call__(self, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
        )
        return batch["input_ids"], batch["attention_mask"].bool()


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load report (a table of every unused audio-tower key for CLAP);
    the loader checks missing keys itself and logs one line instead."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _load_error(name: str, cfg: TextEncoderConfig, err: Exception) -> ValueError:
    offline = " (local_files_only=true: only the local cache is searched)" if cfg.local_files_only else ""
    return ValueError(
        f"{KEY}.name_or_path={name!r} (kind={cfg.kind}) could not be loaded{offline}: {err}. "
        "Give a local folder holding config.json, the weights and the tokenizer files, or a hub id "
        "reachable from this machine."
    )


def load_pretrained(cfg: TextEncoderConfig):
    """Load (encoder, tokenizer, width, name) for kind clap, clap_laion or t5 with from_pretrained.

    CLAP: the text tower of a ClapModel or ClapTextModelWithProjection checkpoint (the audio tower
    is never built). T5: T5EncoderModel. A checkpoint missing any encoder weight is an error, not a
    silent random init.
    """
    from transformers import AutoConfig, AutoTokenizer, ClapTextModelWithProjection, T5EncoderModel

    name = cfg.name_or_path or DEFAULT_NAMES.get(cfg.kind)
    if not name:
        raise ConfigError(f"{KEY}.kind={cfg.kind} needs {KEY}.name_or_path (a hub id or local folder)")
    is_clap = cfg.kind in ("clap", "clap_laion")
    allowed_types = ("clap", "clap_text_model") if is_clap else ("t5",)
    dtype = torch.float16 if cfg.half_precision else torch.float32
    try:
        model_type = AutoConfig.from_pretrained(name, local_files_only=cfg.local_files_only).model_type
    except (OSError, ValueError) as err:
        raise _load_error(name, cfg, err) from err
    if model_type not in allowed_types:
        raise ValueError(
            f"{KEY}.name_or_path={name!r} is a {model_type!r} model but {KEY}.kind={cfg.kind} expects "
            f"one of {allowed_types}; change the kind or the checkpoint"
        )
    model_cls = ClapTextModelWithProjection if is_clap else T5EncoderModel
    try:
        with _quiet_transformers():
            model, info = model_cls.from_pretrained(
                name, local_files_only=cfg.local_files_only, dtype=dtype, output_loading_info=True
            )
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=cfg.local_files_only)
    except (OSError, ValueError) as err:
        raise _load_error(name, cfg, err) from err

    if is_clap:
        # Only the text tower is used; its projection head (pooled embedding) is not.
        needed = [k for k in info["missing_keys"] if k.startswith("text_model.") and ".pooler." not in k]
        encoder = model.text_model
        encoder.pooler = None  # the pooled output is unused; frees its weights
    else:
        needed = list(info["missing_keys"])
        encoder = model
    if needed:
        shown = ", ".join(sorted(needed)[:5])
        raise ValueError(
            f"{KEY}.name_or_path={name!r} lacks {len(needed)} encoder weights (e.g. {shown}); "
            f"it is not a complete {cfg.kind} checkpoint"
        )
    if is_clap:
        max_positions = encoder.config.max_position_embeddings - 2  # RoBERTa offsets positions by pad + 1
        if cfg.max_length > max_positions:
            raise ConfigError(
                f"{KEY}.max_length={cfg.max_length} exceeds the {max_positions} positions of {name!r}; lower it"
            )
    ignored = len(info.get("unexpected_keys", ()))
    logger.info("loaded text encoder %s (%s), ignoring %d unused checkpoint tensors", name, cfg.kind, ignored)
    return encoder, tokenizer, encoder.config.hidden_size, name


def build_text_encoder(cfg: TextEncoderConfig, context_width: int) -> TextEncoder:
    """Build the frozen text encoder named by ``cfg`` with a projection to ``context_width``."""
    if context_width < 1:
        raise ValueError(f"context_width={context_width} must be positive (model.unet.context_width)")
    if cfg.kind == "embedded":
        from sa_train.models.conditioners.embedded import build_embedded_text_encoder

        return build_embedded_text_encoder(cfg, context_width)
    if cfg.kind not in ("clap", "clap_laion", "t5"):
        raise ConfigError(f"{KEY}.kind={cfg.kind!r} is not allowed; choose embedded, clap, clap_laion or t5")
    if cfg.kind == "clap" and not cfg.name_or_path:
        raise ConfigError(
            f"{KEY}.kind=clap needs {KEY}.name_or_path (a hub id or local CLAP folder); "
            "use kind=clap_laion for the public LAION CLAP"
        )
    encoder, tokenizer, width, name = load_pretrained(cfg)
    return TextEncoder(
        encoder,
        HFTokenize(tokenizer),
        encoder_width=width,
        context_width=context_width,
        layer=cfg.layer,
        max_length=cfg.max_length,
        half_precision=cfg.half_precision,
        description=f"{cfg.kind}:{name}",
    )
