"""The pretrained text encoders (clap, clap_laion, t5) load from tiny checkpoints saved to tmp and
return the chosen hidden layer, frozen and outside state_dict. Nothing is downloaded: the models
are random tiny configs and the tokenizers are built in memory."""

from __future__ import annotations

import shutil

import pytest
import torch

import sa_train.config  # noqa: F401  (loads the config schema first; see the lead's note on import order)
from sa_train.config.fields import ConfigError
from sa_train.diffusion.config import DiffusionConfig
from sa_train.models.conditioners.conditioner import Conditioner
from sa_train.models.conditioners.config import ConditioningConfig, TextEncoderConfig, TimingConfig
from sa_train.models.conditioners.text import build_text_encoder

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WIDTH = 16  # hidden width of the tiny checkpoints
PROMPTS = ["a dog barks in the rain", "piano", ""]
SENTENCES = ["a dog barks in the rain", "soft piano melody", "rain on a tin roof", "a cat meows"]


def _clap_text_config():
    return transformers.ClapTextConfig(
        vocab_size=300,
        hidden_size=WIDTH,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        projection_dim=8,
    )


def _roberta_tokenizer():
    """A byte-level BPE tokenizer with no merges: every byte is a token, like RoBERTa's base alphabet."""
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + alphabet)}
    return transformers.RobertaTokenizerFast(vocab=vocab, merges=[])


def _t5_tokenizer():
    """A word-level tokenizer trained in memory on a few sentences, with T5's pad and eos."""
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Folders holding a full ClapModel, a ClapTextModelWithProjection and a T5EncoderModel, each
    saved with its tokenizer."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("text_encoders")
    audio = transformers.ClapAudioConfig(
        depths=[1, 1], num_attention_heads=[1, 1], hidden_size=16, patch_embeds_hidden_size=8,
        projection_dim=8, spec_size=64, window_size=4, num_mel_bins=16, patch_stride=4,
    )
    clap_config = transformers.ClapConfig(
        text_config=_clap_text_config().to_dict(), audio_config=audio.to_dict(), projection_dim=8
    )
    t5_config = transformers.T5Config(
        vocab_size=20, d_model=WIDTH, d_kv=8, num_heads=2, d_ff=32, num_layers=3,
        dropout_rate=0.0, feed_forward_proj="relu", is_encoder_decoder=False, use_cache=False,
    )
    models = {
        "clap": transformers.ClapModel(clap_config),
        "clap_text": transformers.ClapTextModelWithProjection(_clap_text_config()),
        "t5": transformers.T5EncoderModel(t5_config),
    }
    paths = {}
    for name, model in models.items():
        path = root / name
        model.save_pretrained(path)
        (_t5_tokenizer() if name == "t5" else _roberta_tokenizer()).save_pretrained(path)
        paths[name] = str(path)
    return paths


def _reference_hidden_states(kind: str, path: str, prompts, max_length: int, layer: int):
    """Run the saved model ourselves: (hidden_states[layer], attention_mask)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    batch = tokenizer(prompts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    if kind == "t5":
        model = transformers.T5EncoderModel.from_pretrained(path).eval()
    else:
        model = transformers.ClapModel.from_pretrained(path).text_model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    return out.hidden_states[layer], batch["attention_mask"].bool()


@pytest.mark.parametrize("kind, folder", [("clap", "clap"), ("clap_laion", "clap"), ("t5", "t5")])
@pytest.mark.parametrize("layer", [-2, 1])
def test_features_are_the_chosen_hidden_layer_of_the_saved_model(checkpoints, kind, folder, layer):
    cfg = TextEncoderConfig(kind=kind, name_or_path=checkpoints[folder], layer=layer, max_length=12)
    encoder = build_text_encoder(cfg, context_width=WIDTH)
    features, mask = encoder.encode_frozen(PROMPTS)
    expected, expected_mask = _reference_hidden_states(kind, checkpoints[folder], PROMPTS, 12, layer)

    assert features.shape == (3, 12, WIDTH) and features.dtype == torch.float32
    assert torch.equal(mask, expected_mask)
    assert torch.allclose(features[mask], expected[mask], atol=1e-5)
    other_layer = _reference_hidden_states(kind, checkpoints[folder], PROMPTS, 12, layer - 1)[0]
    assert not torch.allclose(features[mask], other_layer[mask], atol=1e-3)


def test_padding_is_masked_zeroed_and_long_prompts_truncated(checkpoints):
    cfg = TextEncoderConfig(kind="clap", name_or_path=checkpoints["clap"], max_length=8)
    encoder = build_text_encoder(cfg, context_width=24)
    tokens, mask = encoder(["dog", "a very long prompt that is longer than eight tokens"])

    assert tokens.shape == (2, 8, 24) and mask.dtype == torch.bool
    assert mask[1].all(), "a prompt longer than max_length fills every position"
    assert 1 <= mask[0].sum() < 8, "a short prompt is padded"
    assert torch.all(tokens[~mask] == 0)
    assert torch.all(tokens[mask].abs().sum(-1) > 0)


def test_clap_text_with_projection_checkpoint_loads_too(checkpoints):
    cfg = TextEncoderConfig(kind="clap", name_or_path=checkpoints["clap_text"], max_length=10)
    tokens, mask = build_text_encoder(cfg, context_width=WIDTH)(PROMPTS)
    assert tokens.shape == (3, 10, WIDTH) and torch.isfinite(tokens).all()


def test_frozen_encoder_gets_no_grad_and_is_absent_from_state_dict(checkpoints):
    cfg = TextEncoderConfig(kind="t5", name_or_path=checkpoints["t5"], max_length=10)
    encoder = build_text_encoder(cfg, context_width=8)
    tokens, _ = encoder(PROMPTS)
    tokens.pow(2).sum().backward()

    assert set(encoder.state_dict()) == {"projection.weight", "projection.bias"}
    assert {n for n, _ in encoder.named_parameters()} == {"projection.weight", "projection.bias"}
    assert encoder.projection.weight.grad is not None
    frozen = list(encoder.frozen_encoder.parameters())
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert not encoder.frozen_encoder.training
    encoder.train()
    assert not encoder.frozen_encoder.training, "train() must not switch the frozen encoder to training mode"


def test_projection_is_added_only_when_widths_differ(checkpoints):
    same = build_text_encoder(TextEncoderConfig(kind="t5", name_or_path=checkpoints["t5"]), context_width=WIDTH)
    other = build_text_encoder(TextEncoderConfig(kind="t5", name_or_path=checkpoints["t5"]), context_width=WIDTH * 2)
    assert list(same.parameters()) == []
    assert other.projection.weight.shape == (WIDTH * 2, WIDTH)


def test_half_precision_keeps_frozen_weights_float16_and_features_float32(checkpoints):
    cfg = TextEncoderConfig(kind="clap", name_or_path=checkpoints["clap"], half_precision=True, max_length=10)
    encoder = build_text_encoder(cfg, context_width=WIDTH)
    assert all(p.dtype == torch.float16 for p in encoder.frozen_encoder.parameters())
    tokens, _ = encoder(PROMPTS)
    assert tokens.dtype == torch.float32 and torch.isfinite(tokens).all()


def test_module_dtype_cast_leaves_frozen_weights_alone(checkpoints):
    encoder = build_text_encoder(TextEncoderConfig(kind="t5", name_or_path=checkpoints["t5"]), context_width=8)
    encoder.to(torch.float64)
    assert all(p.dtype == torch.float32 for p in encoder.frozen_encoder.parameters())
    tokens, _ = encoder(PROMPTS)
    assert tokens.dtype == torch.float64


def test_layer_out_of_range_is_a_config_error_naming_the_key(checkpoints):
    cfg = TextEncoderConfig(kind="t5", name_or_path=checkpoints["t5"], layer=9)
    with pytest.raises(ConfigError, match="text_encoder.layer=9"):
        build_text_encoder(cfg, context_width=8)


def test_wrong_architecture_for_kind_is_explained(checkpoints):
    with pytest.raises(ValueError, match="'t5' model but .*kind=clap"):
        build_text_encoder(TextEncoderConfig(kind="clap", name_or_path=checkpoints["t5"]), context_width=8)


def test_missing_folder_error_names_the_key(tmp_path):
    cfg = TextEncoderConfig(kind="t5", name_or_path=str(tmp_path / "nowhere"), local_files_only=True)
    with pytest.raises(ValueError, match="name_or_path=.*nowhere"):
        build_text_encoder(cfg, context_width=8)


def test_clap_without_name_is_a_config_error():
    with pytest.raises(ConfigError, match="name_or_path"):
        build_text_encoder(TextEncoderConfig(kind="clap"), context_width=8)


def test_clap_laion_defaults_to_the_laion_hub_id():
    cfg = TextEncoderConfig(kind="clap_laion", local_files_only=True)  # never reaches the network
    try:
        build_text_encoder(cfg, context_width=8)
    except ValueError as err:  # not in the local cache: the message names the default id
        assert "laion/clap-htsat-unfused" in str(err)


def test_checkpoint_missing_encoder_weights_is_an_error(checkpoints, tmp_path):
    # A ClapModel folder whose weights lack the text tower must not load as a random init.
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["clap"], broken)
    weights = load_file(broken / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("text_model.encoder.layer.0.")}
    save_file(kept, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks .* encoder weights"):
        build_text_encoder(TextEncoderConfig(kind="clap", name_or_path=str(broken)), context_width=8)


@pytest.mark.parametrize("kind", ["clap", "clap_laion", "t5"])
@pytest.mark.parametrize("timing", ["per_second", "fourier", "none"])
def test_conditioner_shapes_for_pretrained_text_kinds(checkpoints, kind, timing):
    folder = "t5" if kind == "t5" else "clap"
    cfg = ConditioningConfig(
        text_encoder=TextEncoderConfig(kind=kind, name_or_path=checkpoints[folder], max_length=10),
        timing=TimingConfig(kind=timing, global_condition=timing != "none"),
    )
    conditioner = Conditioner(cfg, DiffusionConfig(), context_width=24)
    cond = conditioner(PROMPTS, [0, 5, 600], [30, 95, 600])
    length = 10 + (0 if timing == "none" else 2)
    assert conditioner.context_length == length
    assert cond.context.shape == (3, length, 24) and cond.context_mask.shape == (3, length)
    assert (cond.global_cond is None) == (timing == "none")
    if cond.global_cond is not None:
        assert cond.global_cond.shape == (3, conditioner.global_cond_width) == (3, 48)
    assert set(conditioner.state_dict()) <= {
        "null_context", "text_encoder.projection.weight", "text_encoder.projection.bias",
    } | {k for k in conditioner.state_dict() if k.startswith("timing.")}


def test_max_length_beyond_clap_positions_is_a_config_error(checkpoints):
    cfg = TextEncoderConfig(kind="clap", name_or_path=checkpoints["clap"], max_length=77)  # tiny model: 38
    with pytest.raises(ConfigError, match="max_length=77"):
        build_text_encoder(cfg, context_width=8)
