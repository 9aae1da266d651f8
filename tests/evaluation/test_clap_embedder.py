"""The CLAP embedder loads a tiny random ClapModel saved with its processor to tmp (no download)
and gives the same embeddings as running that saved model by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sa_train.evaluation.embedders import TextAudioEmbedder, build_text_audio_embedder

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")

PROMPTS = ["a sine tone at A4 (440.0 Hz)", "a drum pattern at 120 BPM"]


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    torch.manual_seed(0)
    text = transformers.ClapTextConfig(vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=40, projection_dim=8)
    audio = transformers.ClapAudioConfig(depths=[1, 1], num_attention_heads=[1, 1], hidden_size=16,
                                         patch_embeds_hidden_size=8, projection_dim=8, spec_size=64, window_size=4,
                                         num_mel_bins=16, patch_stride=4)
    config = transformers.ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=8)
    # Byte-level BPE with no merges, built in memory: every byte is a token, like RoBERTa's alphabet.
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + alphabet)}
    tokenizer = transformers.RobertaTokenizerFast(vocab=vocab, merges=[])
    # 16 kHz, 2 s max: 201 mel frames fit the tiny model's 64 x 4 input grid.
    extractor = transformers.ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160,
                                                  max_length_s=2, fft_window_size=400,
                                                  frequency_max=8000)
    folder = tmp_path_factory.mktemp("tiny_clap")
    transformers.ClapModel(config).save_pretrained(folder)
    transformers.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def _tone(freq, seconds=1.5, sr=44100):
    t = np.arange(int(seconds * sr)) / sr
    return np.stack([0.4 * np.sin(2 * np.pi * freq * t)] * 2).astype(np.float32)


def test_clap_embedder_loads_the_saved_model_and_matches_a_manual_run(clap_folder):
    clap = build_text_audio_embedder(clap_folder)
    assert isinstance(clap, TextAudioEmbedder) and clap.sample_rate == 16000

    text = clap.embed_text(PROMPTS)
    assert text.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)

    model = transformers.ClapModel.from_pretrained(clap_folder).eval()
    tokens = transformers.AutoTokenizer.from_pretrained(clap_folder)(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    expected = (out if torch.is_tensor(out) else out.pooler_output).numpy()
    np.testing.assert_allclose(text, expected, atol=1e-5)

    audio = clap.embed_audio(_tone(440), 44100)
    assert audio.shape == (8,) and np.linalg.norm(audio) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(audio, clap.embed_audio(_tone(440), 44100))  # reproducible
    assert not np.allclose(audio, clap.embed_audio(_tone(2000), 44100), atol=1e-4)  # depends on the audio


def test_clap_embedder_reports_a_folder_without_a_model(tmp_path):
    with pytest.raises(ValueError, match="cannot load a CLAP model"):
        build_text_audio_embedder(str(tmp_path))


def test_evaluate_folder_reports_the_clap_score_of_each_clip(clap_folder, tmp_path):
    import json

    import soundfile

    from sa_train.evaluation.evaluate import run_evaluation

    rows = []
    for i, (prompt, freq) in enumerate(zip(PROMPTS, (440, 880))):
        soundfile.write(str(tmp_path / f"{i}.wav"), _tone(freq).T, 44100, subtype="PCM_16")
        rows.append(json.dumps({"path": f"{i}.wav", "prompt": prompt, "seconds_total": 1.5}) + "\n")
    (tmp_path / "manifest.jsonl").write_text("".join(rows))

    result = run_evaluation(str(tmp_path), embedder=None, tagger=None, clap=clap_folder, write_report=False)
    sims = [c.clap_similarity for c in result.clips]
    assert all(-1.0 <= s <= 1.0 for s in sims)
    assert result.metrics["clap_score"] == pytest.approx(np.mean(sims))
    from sa_train.evaluation.audio import load_audio

    clap = build_text_audio_embedder(clap_folder)
    expected = float(clap.embed_text(PROMPTS[:1])[0] @ clap.embed_audio(*load_audio(str(tmp_path / "0.wav"))))
    assert sims[0] == pytest.approx(expected, abs=1e-6)
