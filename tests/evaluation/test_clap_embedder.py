"""The CLAP embedder loads a tiny random ClapModel saved with its processor to tmp (no download;
the ``clap_folder`` fixture in conftest.py) and gives the same embeddings as running that saved
model by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sa_train.evaluation.embedders import TextAudioEmbedder, build_text_audio_embedder

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

PROMPTS = ["a sine tone at A4 (440.0 Hz)", "a drum pattern at 120 BPM"]


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


def test_clap_embeds_wav_files_of_any_rate_and_channel_count_reproducibly(clap_folder, wav_folder):
    from sa_train.evaluation.audio import list_clips, load_audio

    clap = build_text_audio_embedder(clap_folder)
    embeddings = []
    for entry in list_clips(wav_folder):
        audio, sr = load_audio(entry.path)
        emb = clap.embed_audio(audio, sr)
        assert emb.shape == (8,) and np.all(np.isfinite(emb)) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_array_equal(emb, build_text_audio_embedder(clap_folder).embed_audio(audio, sr))
        # Peak-normalised to -1 dBFS first (the paper's code), so the level does not matter.
        np.testing.assert_allclose(emb, clap.embed_audio(0.25 * audio, sr), atol=1e-5)
        embeddings.append(emb)
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-4)


def test_clap_names_what_a_local_folder_lacks(clap_folder, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="folder .*missing_clap' does not exist.*hf download laion/clap-htsat-fused"):
        build_text_audio_embedder(str(tmp_path / "missing_clap"))
    partial = tmp_path / "partial"
    shutil.copytree(clap_folder, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="has no model.safetensors or pytorch_model.bin"):
        build_text_audio_embedder(str(partial))
