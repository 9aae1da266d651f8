"""The openl3 embedder through torchopenl3's real model, built with seeded random weights (no
download): WAV files of any rate and channel count become one 1024-d sample per 0.5 s frame,
the same as torchopenl3's own pipeline gives, and the weights come from a file, a folder or the
torch hub cache with clear errors when they are missing or do not fit."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from sa_train.evaluation.audio import list_clips, load_audio
from sa_train.evaluation.metrics import frechet_distance, gaussian_stats

from metric_audio import CLIPS

torch = pytest.importorskip("torch")
pytest.importorskip("torchopenl3")

from sa_train.evaluation.embedders import AudioEmbedder, build_embedder  # noqa: E402
from sa_train.evaluation.embedders.openl3 import OpenL3Embedder, weights_name  # noqa: E402
from sa_train.evaluation.embedders.weights import peak_normalize  # noqa: E402

WEIGHTS_NAME = weights_name("mel256", "music", 512)


@pytest.fixture(scope="module")
def embedder():
    return build_embedder("openl3", weights="random")


def expected_frames(num_samples: int, sr: int) -> int:
    """openl3 with center=True: half a window of zeros in front, then 1 s windows every 0.5 s
    until the audio is covered."""
    padded = math.ceil(num_samples * 48000 / sr) + 24000
    return 1 if padded <= 48000 else 1 + math.ceil((padded - 48000) / 24000)


@pytest.fixture(scope="module")
def embeddings(embedder, wav_folder):
    """File name -> frames of every clip of the WAV folder."""
    return {os.path.basename(e.path): embedder.embed(*load_audio(e.path)) for e in list_clips(wav_folder)}


def test_openl3_gives_one_1024_d_sample_per_frame_for_any_rate_and_channel_count(embedder, embeddings):
    assert isinstance(embedder, AudioEmbedder) and embedder.settings["weights"] == "random(seed=0)"
    out = embeddings
    for name, sr, channels, seconds, _ in CLIPS:
        frames = out[name]
        assert frames.shape == (expected_frames(int(round(seconds * sr)), sr), 1024), name
        assert frames.dtype == np.float64 and np.all(np.isfinite(frames))
        left, right = frames[:, :512], frames[:, 512:]
        if channels == 1:
            np.testing.assert_array_equal(left, right)  # mono is duplicated
        else:
            assert not np.allclose(left, right)  # the right channel (an octave up) is embedded on its own
        assert np.ptp(frames, axis=0).max() > 0  # the random network still responds to its input


def test_openl3_is_deterministic_across_builds_and_seeded(embedder, embeddings, wav_folder):
    path = os.path.join(wav_folder, "stereo_22k.wav")
    first = embedder.embed(*load_audio(path))
    np.testing.assert_array_equal(first, embeddings["stereo_22k.wav"])
    np.testing.assert_array_equal(first, OpenL3Embedder(weights="random").embed(*load_audio(path)))
    assert not np.allclose(first, OpenL3Embedder(weights="random", seed=1).embed(*load_audio(path)))


def test_openl3_matches_torchopenl3s_own_pipeline_per_channel(embedder):
    import torchopenl3

    rng = np.random.default_rng(3)
    stereo = (0.3 * rng.standard_normal((2, 48000 + 1234))).astype(np.float32)
    ours = embedder.embed(stereo, 48000)
    level = peak_normalize(stereo, -1.0)
    for channel in range(2):
        theirs, _ = torchopenl3.get_audio_embedding(level[channel], 48000, model=embedder.model, hop_size=0.5,
                                                    center=True, batch_size=7, verbose=False)
        np.testing.assert_allclose(ours[:, 512 * channel : 512 * (channel + 1)], theirs[0].numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_openl3_frechet_distance_is_finite_and_zero_only_for_the_same_audio(embeddings):
    names = [c[0] for c in CLIPS]
    ref = np.concatenate([embeddings[n] for n in names[:2]])
    gen = np.concatenate([embeddings[n] for n in names[2:]])
    fd_same = frechet_distance(*gaussian_stats(ref), *gaussian_stats(ref))
    fd_other = frechet_distance(*gaussian_stats(ref), *gaussian_stats(gen))
    assert np.isfinite(fd_same) and np.isfinite(fd_other)
    assert abs(fd_same) < 1e-6 * max(fd_other, 1e-12) + 1e-9
    assert fd_other > 0


def test_openl3_loads_weights_from_a_folder_a_file_or_the_hub_cache(embedder, tmp_path, monkeypatch):
    clip = (0.2 * np.random.default_rng(0).standard_normal((1, 30000))).astype(np.float32)
    expected = embedder.embed(clip, 32000)
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(embedder.model.state_dict(), folder / WEIGHTS_NAME)
    # seed=1 would give other random weights: equal outputs prove the file's weights were loaded.
    from_folder = OpenL3Embedder(weights=str(folder), seed=1)
    from_file = OpenL3Embedder(weights=str(folder / WEIGHTS_NAME), seed=1)
    assert from_folder.settings["weights"] == WEIGHTS_NAME
    np.testing.assert_array_equal(from_folder.embed(clip, 32000), expected)
    np.testing.assert_array_equal(from_file.embed(clip, 32000), expected)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    os.makedirs(tmp_path / "torch_home" / "hub" / "checkpoints")
    os.replace(folder / WEIGHTS_NAME, tmp_path / "torch_home" / "hub" / "checkpoints" / WEIGHTS_NAME)
    np.testing.assert_array_equal(OpenL3Embedder(weights=None, seed=1).embed(clip, 32000), expected)


def test_openl3_names_the_expected_weight_file_when_it_is_missing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=rf"has no {WEIGHTS_NAME}.*github.com/torchopenl3"):
        OpenL3Embedder(weights=str(tmp_path))
    with pytest.raises(ValueError, match=rf"neither a file nor a folder holding {WEIGHTS_NAME}"):
        OpenL3Embedder(weights=str(tmp_path / "nowhere.pth.tar"))

    def offline(url, dst, progress=True):
        raise OSError("network unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ValueError, match=rf"cannot download its weights \(network unreachable\).*{WEIGHTS_NAME}"):
        OpenL3Embedder(weights=None)


def test_openl3_rejects_weights_that_do_not_fit_the_model(embedder, tmp_path):
    state = embedder.model.state_dict()
    state.pop("audio_embedding_layer.bias")
    torch.save(state, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="does not fit the model.*audio_embedding_layer.bias"):
        OpenL3Embedder(weights=str(tmp_path))
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file"):
        OpenL3Embedder(weights=str(tmp_path / "junk.pth.tar"))


def test_openl3_rejects_more_than_two_channels_and_unknown_settings(embedder):
    with pytest.raises(ValueError, match="mono or stereo.*3 channels"):
        embedder.embed(np.zeros((3, 48000), np.float32), 48000)
    with pytest.raises(ValueError, match="input_repr 'mel512'"):
        OpenL3Embedder(weights="random", input_repr="mel512")
