"""The conditioner with the embedded text encoder: timing embeddings, context layout, CFG null
conditioning and dropout, what is trainable and saved, and the embedded encoder's determinism."""

from __future__ import annotations

import pytest
import torch

import sa_train.config  # noqa: F401  (loads the config schema first; see the lead's note on import order)
from sa_train.config.fields import ConfigError
from sa_train.diffusion.config import DiffusionConfig
from sa_train.models.conditioners.conditioner import Conditioner, Conditioning
from sa_train.models.conditioners.config import ConditioningConfig, TextEncoderConfig, TimingConfig
from sa_train.models.conditioners.embedded import ByteTokenizer, build_embedded_model
from sa_train.models.conditioners.text import build_text_encoder
from sa_train.models.conditioners.timing import TimingEmbedding

WIDTH = 16
PROMPTS = ["a dog barks", "rain on a tin roof", ""]


def _text(max_length: int = 12, **kwargs) -> TextEncoderConfig:
    return TextEncoderConfig(kind="embedded", max_length=max_length, embedded_width=32, **kwargs)


def _conditioner(timing: str = "per_second", null: str = "learned", global_condition: bool = False, **kw):
    cfg = ConditioningConfig(
        text_encoder=_text(), timing=TimingConfig(kind=timing, global_condition=global_condition, **kw)
    )
    return Conditioner(cfg, DiffusionConfig(null_embedding=null), context_width=WIDTH)


# --- timing ---------------------------------------------------------------------------------


def test_per_second_floors_and_clamps_to_the_table():
    timing = TimingEmbedding(TimingConfig(kind="per_second", max_seconds=512), WIDTH)
    tokens, glob = timing(torch.tensor([600.0, -3.0, 3.7, 512.0]), torch.tensor([0.0, 1.0, 2.0, 3.0]))
    table = timing.start.table.weight
    assert tokens.shape == (4, 2, WIDTH) and glob is None
    assert torch.equal(tokens[0, 0], table[512])  # 600 s -> 512
    assert torch.equal(tokens[1, 0], table[0])  # -3 s -> 0
    assert torch.equal(tokens[2, 0], table[3])  # 3.7 s -> 3
    assert torch.equal(tokens[3, 0], table[512])
    assert torch.equal(tokens[2, 1], timing.total.table.weight[2]), "seconds_total has its own table"


def test_fourier_differs_for_different_seconds_and_clamps():
    timing = TimingEmbedding(TimingConfig(kind="fourier", max_seconds=512, fourier_features=32), WIDTH)
    tokens, _ = timing(torch.tensor([0.0, 10.0, 11.0, 512.0, 900.0, 10.5]), torch.tensor([95.0] * 6))
    start = tokens[:, 0]
    assert tokens.shape == (6, 2, WIDTH)
    for i in range(3):
        assert not torch.allclose(start[i], start[i + 1]), f"seconds {i} and {i + 1} embed alike"
    assert torch.allclose(start[3], start[4]), "seconds beyond max_seconds are clamped"
    assert torch.allclose(start[5], start[1]), "seconds_start is floored to whole seconds, as in training"
    assert not torch.allclose(tokens[0, 0], tokens[0, 1]), "start and total use separate embeddings"


def test_global_condition_is_both_tokens_concatenated():
    timing = TimingEmbedding(TimingConfig(kind="per_second", global_condition=True), WIDTH)
    tokens, glob = timing(torch.tensor([1.0, 2.0]), torch.tensor([30.0, 40.0]))
    assert timing.global_width == 2 * WIDTH
    assert torch.equal(glob, torch.cat([tokens[:, 0], tokens[:, 1]], dim=-1))


def test_timing_none_gives_no_tokens_and_rejects_global():
    tokens, glob = TimingEmbedding(TimingConfig(kind="none"), WIDTH)(torch.zeros(3), torch.zeros(3))
    assert tokens.shape == (3, 0, WIDTH) and glob is None
    with pytest.raises(ConfigError, match="global_condition"):
        TimingEmbedding(TimingConfig(kind="none", global_condition=True), WIDTH)


# --- conditioner ----------------------------------------------------------------------------


TIMING_COMBINATIONS = [
    ("per_second", False), ("per_second", True), ("fourier", False), ("fourier", True), ("none", False)
]


@pytest.mark.parametrize("timing, global_condition", TIMING_COMBINATIONS)  # none + global: a ConfigError
@pytest.mark.parametrize("null", ["learned", "zeros"])
def test_conditioning_shapes_for_every_combination(timing, null, global_condition):
    conditioner = _conditioner(timing, null, global_condition)
    cond = conditioner(PROMPTS, [0, 12.5, 600], [30, 95, 95])
    n_timing = 0 if timing == "none" else 2
    length = 12 + n_timing
    assert conditioner.context_length == length
    assert cond.context.shape == (3, length, WIDTH) and cond.context_mask.shape == (3, length)
    assert cond.context_mask.dtype == torch.bool
    assert cond.context_mask[:, 12:].all(), "timing tokens are always attended"
    assert conditioner.global_cond_width == (2 * WIDTH if global_condition else None)
    if global_condition:
        assert cond.global_cond.shape == (3, 2 * WIDTH)
    else:
        assert cond.global_cond is None
    null_cond = conditioner.null_conditioning(3)
    assert null_cond.context.shape == cond.context.shape and null_cond.context_mask.all()
    assert (null_cond.global_cond is None) == (not global_condition)


def test_timing_tokens_follow_the_text_tokens():
    conditioner = _conditioner("per_second")
    cond = conditioner(PROMPTS, [3, 4, 5], [30, 40, 50])
    text, text_mask = conditioner.text_encoder(PROMPTS)
    timing, _ = conditioner.timing(torch.tensor([3.0, 4, 5]), torch.tensor([30.0, 40, 50]))
    assert torch.equal(cond.context[:, :12], text) and torch.equal(cond.context_mask[:, :12], text_mask)
    assert torch.equal(cond.context[:, 12:], timing)


def test_text_mask_marks_real_tokens_only():
    cond = _conditioner()(["ab", "abcdefghijklmnopqrstuvwxyz"], [0, 0], [1, 1])
    # "ab" = 2 bytes + eos; the long prompt fills all 12 text positions.
    assert cond.context_mask[0, :12].sum() == 3 and cond.context_mask[1, :12].all()


def test_bad_seconds_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="seconds_total has shape"):
        _conditioner()(PROMPTS, [0, 0, 0], [1, 2])


def test_only_trainable_parts_are_parameters_and_state():
    conditioner = _conditioner("fourier", "learned", True)
    keys = set(conditioner.state_dict())
    assert "null_context" in keys
    assert any(k.startswith("text_encoder.projection") for k in keys)
    assert any(k.startswith("timing.start") for k in keys)
    assert not any("block" in k or "shared" in k for k in keys), f"frozen encoder leaked: {sorted(keys)}"
    assert conditioner.trainable_state_dict().keys() == keys
    assert all(p.requires_grad for p in conditioner.parameters())
    assert conditioner.frozen_parameter_count() > 0

    fresh = _conditioner("fourier", "learned", True)
    fresh.load_state_dict(conditioner.state_dict())  # strict: nothing missing or extra
    cond_a = conditioner(PROMPTS, [1, 2, 3], [9, 9, 9])
    cond_b = fresh(PROMPTS, [1, 2, 3], [9, 9, 9])
    assert torch.equal(cond_a.context, cond_b.context) and torch.equal(cond_a.global_cond, cond_b.global_cond)


def test_gradients_reach_trainable_parts_but_not_the_frozen_encoder():
    conditioner = _conditioner("per_second", "learned")
    cond = conditioner.drop_for_cfg(conditioner(PROMPTS, [1, 2, 3], [9, 9, 9]), probability=0.5,
                                    generator=torch.Generator().manual_seed(3))
    cond.context.pow(2).sum().backward()
    assert conditioner.text_encoder.projection.weight.grad is not None
    assert conditioner.timing.start.table.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in conditioner.text_encoder.frozen_encoder.parameters())


# --- classifier-free guidance ---------------------------------------------------------------


def _dropped_rows(cond: Conditioning, out: Conditioning, null: Conditioning) -> torch.Tensor:
    """Per example: True if the whole row became the null, False if it is untouched (else fail)."""
    same = (out.context == cond.context).flatten(1).all(1) & (out.context_mask == cond.context_mask).all(1)
    is_null = (out.context == null.context).flatten(1).all(1) & out.context_mask.all(1)
    assert torch.all(same ^ is_null), "each example must be either kept whole or replaced whole"
    return is_null


@pytest.mark.parametrize("null", ["learned", "zeros"])
def test_cfg_dropout_zero_keeps_and_one_replaces_everything(null):
    conditioner = _conditioner("per_second", null, global_condition=True)
    cond = conditioner(PROMPTS, [1, 2, 3], [9, 9, 9])
    kept = conditioner.drop_for_cfg(cond, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(kept.context, cond.context) and torch.equal(kept.global_cond, cond.global_cond)
    assert torch.equal(kept.context_mask, cond.context_mask)

    dropped = conditioner.drop_for_cfg(cond, 1.0, torch.Generator().manual_seed(0))
    expected = conditioner.null_conditioning(3)
    assert torch.equal(dropped.context, expected.context)
    assert dropped.context_mask.all(), "null tokens are all attended"
    assert torch.all(dropped.global_cond == 0)
    if null == "zeros":
        assert torch.all(dropped.context == 0)
    else:
        assert dropped.context.abs().sum() > 0


def test_cfg_dropout_half_replaces_about_half_and_is_reproducible():
    conditioner = _conditioner("per_second", "learned")
    n = 2000
    # Real rows (with padding) differ from the all-attended null, so each row's fate is visible.
    base = conditioner([PROMPTS[0]] * 4, [1] * 4, [9] * 4)
    cond = Conditioning(base.context.repeat(n // 4, 1, 1), base.context_mask.repeat(n // 4, 1))
    null = conditioner.null_conditioning(n)
    first = _dropped_rows(cond, conditioner.drop_for_cfg(cond, 0.5, torch.Generator().manual_seed(7)), null)
    again = _dropped_rows(cond, conditioner.drop_for_cfg(cond, 0.5, torch.Generator().manual_seed(7)), null)
    other = _dropped_rows(cond, conditioner.drop_for_cfg(cond, 0.5, torch.Generator().manual_seed(8)), null)
    assert 0.45 < first.float().mean().item() < 0.55
    assert torch.equal(first, again), "the same generator seed drops the same examples"
    assert not torch.equal(first, other)


def test_cfg_dropout_default_probability_comes_from_the_diffusion_config():
    cfg = ConditioningConfig(text_encoder=_text(), timing=TimingConfig())
    conditioner = Conditioner(cfg, DiffusionConfig(cfg_dropout=1.0), context_width=WIDTH)
    cond = conditioner(PROMPTS, [1, 2, 3], [9, 9, 9])
    assert torch.equal(conditioner.drop_for_cfg(cond).context, conditioner.null_conditioning(3).context)
    with pytest.raises(ValueError, match="probability"):
        conditioner.drop_for_cfg(cond, 1.5)


def test_concat_stacks_conditioning_for_one_guided_call():
    conditioner = _conditioner(global_condition=True)
    cond = conditioner(PROMPTS, [1, 2, 3], [9, 9, 9])
    both = Conditioning.concat([cond, conditioner.null_conditioning(3)])
    assert both.context.shape == (6, 14, WIDTH) and both.global_cond.shape == (6, 2 * WIDTH)


# --- the embedded encoder -------------------------------------------------------------------


def test_embedded_encoder_is_deterministic_from_its_seed():
    torch.manual_seed(123)
    a = build_embedded_model(_text(embedded_seed=5))
    torch.manual_seed(456)  # the global RNG must not matter
    b = build_embedded_model(_text(embedded_seed=5))
    c = build_embedded_model(_text(embedded_seed=6))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_building_the_embedded_encoder_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    build_embedded_model(_text())
    assert torch.equal(torch.get_rng_state(), state)


def test_embedded_features_separate_prompts_and_repeat_exactly():
    encoder = build_text_encoder(_text(max_length=32), context_width=WIDTH)
    features, mask = encoder.encode_frozen(["a dog barks", "a dog barks", "a cat meows", "été"])
    assert torch.equal(features[0], features[1])
    assert not torch.allclose(features[0][mask[0]], features[2][mask[2]])
    assert features.abs().sum(-1)[mask].min() > 0
    assert mask[3].sum() == len("été".encode("utf-8")) + 1  # bytes + eos


def test_byte_tokenizer_truncates_and_ends_with_eos():
    ids, mask = ByteTokenizer()(["abcdef", "ab"], max_length=4)
    assert ids.shape == (2, 4) and mask[0].all()
    assert ids[0, -1] == ids[1, 2], "truncated prompts still end with eos"
    assert mask[1].tolist() == [True, True, True, False]
