"""The passt tagger through hear21passt's real PaSST-S and mel front end, built with seeded random
weights (no download): WAV files of any rate and channel count become 527 class probabilities,
windows follow the paper's metric code, and weights load from a file, a folder or the torch hub
cache with clear errors when they are missing or do not fit."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sa_train.evaluation.audio import list_clips, load_audio
from sa_train.evaluation.metrics import kl_divergence

from metric_audio import CLIPS

torch = pytest.importorskip("torch")
pytest.importorskip("hear21passt")

from sa_train.evaluation.embedders import Tagger, build_tagger  # noqa: E402
from sa_train.evaluation.embedders.passt import MIN_SAMPLES, WEIGHTS_NAME, PasstTagger, window_starts  # noqa: E402

SR = 32000


@pytest.fixture(scope="module")
def tagger():
    """The paper's settings: 10 s windows every 5 s."""
    return build_tagger("passt", weights="random")


@pytest.fixture(scope="module")
def short_windows():
    """2 s windows every 1 s: several windows per short clip, at a fifth of the cost."""
    return PasstTagger(weights="random", window_seconds=2.0, hop_seconds=1.0)


def test_windows_start_every_hop_and_pad_as_the_paper_code_does(short_windows):
    assert window_starts(25 * SR, 10 * SR, 5 * SR) == [0, 5 * SR, 10 * SR, 15 * SR]
    assert window_starts(22 * SR, 10 * SR, 5 * SR) == [0, 5 * SR, 10 * SR, 15 * SR]
    assert window_starts(10 * SR, 10 * SR, 5 * SR) == [0]
    assert window_starts(3 * SR, 10 * SR, 5 * SR) == [0]
    sizes = [w.size for w in short_windows.windows(np.ones(int(3.5 * SR), np.float32))]
    assert sizes == [2 * SR] * 3  # starts 0, 1, 2 s; the last (1.5 s) zero-padded to 2 s
    last = short_windows.windows(np.ones(int(3.5 * SR), np.float32))[-1]
    assert last[: int(1.5 * SR)].min() == 1 and last[int(1.5 * SR) :].max() == 0
    assert [w.size for w in short_windows.windows(np.ones(int(0.2 * SR)))] == [int(0.2 * SR)]  # <= 15%: as it is
    assert [w.size for w in short_windows.windows(np.ones(100))] == [MIN_SAMPLES]  # below PaSST's shortest input


def test_passt_gives_class_probabilities_for_any_rate_and_channel_count(tagger, wav_folder):
    assert isinstance(tagger, Tagger) and tagger.settings["weights"] == "random(seed=0)"
    probs = {}
    for entry in list_clips(wav_folder):
        p = tagger.class_probabilities(*load_audio(entry.path))
        assert p.shape == (527,) and np.all(np.isfinite(p)) and p.min() > 0
        assert p.sum() == pytest.approx(1.0)
        probs[os.path.basename(entry.path)] = p
    names = [c[0] for c in CLIPS]
    kl_self = kl_divergence(probs[names[0]], probs[names[0]])
    kl_other = kl_divergence(probs[names[0]], probs[names[1]])
    assert kl_self == pytest.approx(0.0, abs=1e-9) and np.isfinite(kl_other) and kl_other > 0


def test_passt_averages_window_logits_then_takes_the_softmax(short_windows, wav_folder):
    audio, sr = load_audio(os.path.join(wav_folder, "mono_16k.wav"))  # 3.1 s: windows at 0, 1, 2 s
    logits = short_windows.logits(audio, sr)
    assert logits.shape == (3, 527) and np.all(np.isfinite(logits))
    assert not np.allclose(logits[0], logits[2])  # each window sees its own audio
    expected = torch.softmax(torch.from_numpy(logits.mean(axis=0)), dim=0).numpy()
    np.testing.assert_allclose(short_windows.class_probabilities(audio, sr), expected, rtol=1e-12)


def test_passt_is_deterministic_and_leaves_the_callers_random_stream_alone(short_windows, wav_folder):
    audio, sr = load_audio(os.path.join(wav_folder, "stereo_22k.wav"))
    first = short_windows.class_probabilities(audio, sr)
    state = torch.random.get_rng_state()
    np.testing.assert_array_equal(first, short_windows.class_probabilities(audio, sr))
    assert torch.equal(state, torch.random.get_rng_state())  # the mel front end draws from it otherwise
    rebuilt = PasstTagger(weights="random", window_seconds=2.0, hop_seconds=1.0)
    np.testing.assert_array_equal(first, rebuilt.class_probabilities(audio, sr))
    other_seed = PasstTagger(weights="random", window_seconds=2.0, hop_seconds=1.0, seed=1)
    assert not np.allclose(first, other_seed.class_probabilities(audio, sr))


def test_passt_loads_weights_from_a_folder_a_file_or_the_hub_cache(short_windows, tmp_path, monkeypatch):
    clip = (0.2 * np.random.default_rng(0).standard_normal((1, SR))).astype(np.float32)
    expected = short_windows.logits(clip, SR)
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(short_windows.model.net.state_dict(), folder / WEIGHTS_NAME)
    # seed=1 would give other random weights: equal outputs prove the file's weights were loaded.
    for weights in (str(folder), str(folder / WEIGHTS_NAME)):
        loaded = PasstTagger(weights=weights, window_seconds=2.0, hop_seconds=1.0, seed=1)
        assert loaded.settings["weights"] == WEIGHTS_NAME
        np.testing.assert_array_equal(loaded.logits(clip, SR), expected)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    os.makedirs(tmp_path / "torch_home" / "hub" / "checkpoints")
    os.replace(folder / WEIGHTS_NAME, tmp_path / "torch_home" / "hub" / "checkpoints" / WEIGHTS_NAME)
    cached = PasstTagger(weights=None, window_seconds=2.0, hop_seconds=1.0, seed=1)
    np.testing.assert_array_equal(cached.logits(clip, SR), expected)


def test_passt_names_the_expected_weight_file_and_rejects_weights_that_do_not_fit(short_windows, tmp_path):
    with pytest.raises(ValueError, match=rf"has no {WEIGHTS_NAME}.*github.com/kkoutini/PaSST"):
        PasstTagger(weights=str(tmp_path))
    # A fine-tuned checkpoint's head only, with 10 classes (the whole net would be 345 MB to write).
    state = short_windows.model.net.state_dict()
    head = {k: v[:10] for k, v in state.items() if k.startswith("head.1.")}
    torch.save(head, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="does not fit the model.*converting it failed at 'pos_embed'"):
        PasstTagger(weights=str(tmp_path))
    head["time_new_pos_embed"] = state["time_new_pos_embed"]
    torch.save(head, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="does not fit the model.*Missing key.*size mismatch for head.1.weight"):
        PasstTagger(weights=str(tmp_path))


def test_passt_rejects_windows_it_cannot_take():
    with pytest.raises(ValueError, match="hop_seconds"):
        PasstTagger(weights="random", window_seconds=2.0, hop_seconds=3.0)
