"""The built-in spectral embedder and synth_kind tagger, and the registry's errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sa_train.data.synth import KINDS, synth_example
from sa_train.evaluation.embedders import (
    AudioEmbedder, MissingPackageError, Tagger, build_embedder, build_tagger,
)
from sa_train.evaluation.embedders.spectral import KIND_CLASSES, SpectralEmbedder

SR = 44100


def test_spectral_embedder_gives_one_frame_per_half_second_window():
    embedder = build_embedder("spectral")
    assert isinstance(embedder, AudioEmbedder)
    rng = np.random.default_rng(0)
    three_seconds = (0.1 * rng.standard_normal((2, 3 * SR))).astype(np.float32)
    frames = embedder.embed(three_seconds, SR)
    assert frames.shape == (5, 4 * embedder.settings["n_mels"])  # windows at 0, 0.5, ..., 2.0 s
    assert np.all(np.isfinite(frames))
    assert embedder.embed(three_seconds[:, : SR // 2], SR).shape[0] == 1  # shorter than a window


def test_spectral_embedder_duplicates_mono_and_keeps_channels_apart():
    embedder = SpectralEmbedder()
    t = np.arange(SR * 2) / SR
    mono = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    dup = embedder.embed(mono[None], SR)
    np.testing.assert_allclose(dup, embedder.embed(np.stack([mono, mono]), SR), atol=1e-9)
    half = dup.shape[1] // 2
    np.testing.assert_allclose(dup[:, :half], dup[:, half:])  # left block == right block
    louder_left = embedder.embed(np.stack([mono, 0.1 * mono]), SR)
    n_mels = embedder.settings["n_mels"]  # each channel's block: band means, then band deviations
    peak_left, peak_right = louder_left[:, :n_mels].max(), louder_left[:, half : half + n_mels].max()
    assert peak_left - peak_right == pytest.approx(20.0, abs=0.5)  # dB: left is 10x the amplitude
    with pytest.raises(ValueError, match="channels"):
        embedder.embed(np.zeros((3, SR), np.float32), SR)


def test_spectral_embedder_is_independent_of_the_input_sample_rate():
    embedder = SpectralEmbedder()
    t44, t48 = np.arange(SR * 2) / SR, np.arange(48000 * 2) / 48000
    a = embedder.embed((0.3 * np.sin(2 * np.pi * 500 * t44))[None].astype(np.float32), SR)
    b = embedder.embed((0.3 * np.sin(2 * np.pi * 500 * t48))[None].astype(np.float32), 48000)
    assert a.shape == b.shape
    assert np.abs(a - b).max() < 3.0  # dB; resampling edges differ a little


def test_synth_kind_tagger_recognises_the_synthetic_kinds():
    tagger = build_tagger("synth_kind")
    assert isinstance(tagger, Tagger) and tuple(tagger.classes) == KIND_CLASSES == KINDS
    wrong = []
    for index in range(16):
        audio, caption, fields = synth_example(index, 11)
        probs = tagger.class_probabilities(audio.T, SR)
        assert probs.shape == (4,) and probs.sum() == pytest.approx(1.0) and probs.min() > 0
        if KIND_CLASSES[int(np.argmax(probs))] != fields["kind"]:
            wrong.append(caption)
    assert not wrong


def shelf(audio: np.ndarray, corner_hz: float, gain_db: float, low: bool) -> np.ndarray:
    """A 4th-order-shaped shelf applied in the frequency domain: ``gain_db`` below (low) or above the corner."""
    spectrum = np.fft.rfft(audio, axis=-1)
    freqs = np.fft.rfftfreq(audio.shape[-1], 1 / SR)
    weight = 1 / (1 + (freqs / corner_hz) ** 4) if low else 1 / (1 + (corner_hz / np.maximum(freqs, 1e-9)) ** 4)
    return np.fft.irfft(spectrum * (1 + (10 ** (gain_db / 20) - 1) * weight), audio.shape[-1], axis=-1)


CHANGES = {  # what a decoder or a recording may do to a clip without changing its kind for a listener
    "bass -7 dB under 200 Hz": lambda x: shelf(x, 200, -7, low=True),
    "bass -12 dB under 200 Hz": lambda x: shelf(x, 200, -12, low=True),
    "treble +3 dB over 5 kHz": lambda x: shelf(x, 5000, 3, low=False),
    "20 dB quieter": lambda x: 0.1 * x,
    "over a -50 dBFS noise floor": lambda x: x + 10 ** (-50 / 20) * np.random.default_rng(1).standard_normal(x.shape),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_synth_kind_tagger_keeps_every_kind_through_eq_level_and_a_noise_floor(change):
    """Clips of another seed than the prototypes were set on, each in a 6.3 s window as generation
    gives them. Before the level-change feature, every drum pattern read as noise after the bass cuts."""
    tagger = build_tagger("synth_kind")
    wrong = []
    for index in range(16):
        audio, caption, fields = synth_example(index, 23, min_seconds=1.0, max_seconds=5.0)
        window = np.zeros((2, int(6.3 * SR)))
        window[:, : audio.shape[0]] = audio.T
        probs = tagger.class_probabilities(CHANGES[change](window), SR)
        if KIND_CLASSES[int(np.argmax(probs))] != fields["kind"]:
            wrong.append(caption)
    assert not wrong, f"{change}: {wrong}"


def test_synth_kind_tagger_is_uniform_on_silence():
    probs = build_tagger("synth_kind").class_probabilities(np.zeros((2, SR), np.float32), SR)
    np.testing.assert_allclose(probs, 0.25)


def test_unknown_names_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="openl3"):
        build_embedder("vggish")
    with pytest.raises(ValueError, match="passt"):
        build_tagger("panns")


@pytest.mark.parametrize("name, package", [("openl3", "torchopenl3"), ("passt", "hear21passt")])
def test_real_models_without_their_package_name_the_pip_package(name, package, monkeypatch):
    # A None entry in sys.modules makes `import package...` fail as if it were not installed.
    for module in [m for m in sys.modules if m == package or m.startswith(package + ".")] + [package]:
        monkeypatch.setitem(sys.modules, module, None)
    build = build_embedder if name == "openl3" else build_tagger
    with pytest.raises(MissingPackageError, match=rf"pip install {package}`.*sa_train\[eval\]"):
        build(name, weights="random")
