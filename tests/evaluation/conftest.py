"""Fixtures for the metric-model tests: WAV files as a user's folder holds them, and a tiny CLAP."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # metric_audio (importlib mode)

from metric_audio import write_folder  # noqa: E402

@pytest.fixture(scope="session")
def wav_folder(tmp_path_factory) -> str:
    return write_folder(tmp_path_factory.mktemp("metric_wavs"))


@pytest.fixture(scope="session")
def clap_folder(tmp_path_factory):
    """A tiny random transformers ClapModel saved with its processor (no download)."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    torch = pytest.importorskip("torch")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text = transformers.ClapTextConfig(vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=32, max_position_embeddings=40, projection_dim=8)
        audio = transformers.ClapAudioConfig(depths=[1, 1], num_attention_heads=[1, 1], hidden_size=16,
                                             patch_embeds_hidden_size=8, projection_dim=8, spec_size=64, window_size=4,
                                             num_mel_bins=16, patch_stride=4)
        config = transformers.ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)
        model = transformers.ClapModel(config)
    # Byte-level BPE with no merges, built in memory: every byte is a token, like RoBERTa's alphabet.
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + alphabet)}
    tokenizer = transformers.RobertaTokenizerFast(vocab=vocab, merges=[])
    # 16 kHz, 2 s max: 201 mel frames fit the tiny model's 64 x 4 input grid.
    extractor = transformers.ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160,
                                                  max_length_s=2, fft_window_size=400, frequency_max=8000)
    folder = tmp_path_factory.mktemp("tiny_clap")
    model.save_pretrained(folder)
    transformers.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)
