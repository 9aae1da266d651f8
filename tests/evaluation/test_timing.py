"""The energy-based end-of-content detector on clips whose content end is known, and the report."""

from __future__ import annotations

import numpy as np
import pytest

from sa_train.evaluation.timing import detect_content_end, plot_timing, timing_report

SR = 44100


def _tone(seconds: float, amplitude: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return amplitude * np.sin(2 * np.pi * freq * t)


def _stereo(*parts: np.ndarray, total: float) -> np.ndarray:
    mono = np.zeros(int(total * SR))
    x = np.concatenate(parts)
    mono[: x.size] = x
    return np.stack([mono, 0.8 * mono]).astype(np.float32)


def test_tone_then_silence_ends_where_the_tone_ends():
    audio = _stereo(_tone(1.7), total=3.0)
    assert detect_content_end(audio, SR) == pytest.approx(1.7, abs=0.1)


def test_quiet_passage_inside_the_content_does_not_end_it():
    # Tone, a passage 30 dB down, silence, tone again, then silence to the end of the file.
    quiet = _tone(0.6, amplitude=0.5 * 10 ** (-30 / 20))
    audio = _stereo(_tone(0.8), quiet, np.zeros(int(0.4 * SR)), _tone(0.5), total=4.0)
    assert detect_content_end(audio, SR) == pytest.approx(2.3, abs=0.1)


def test_a_noise_floor_after_the_content_counts_as_silence():
    rng = np.random.default_rng(0)
    audio = _stereo(_tone(1.25), total=3.0)
    audio = audio + (10 ** (-70 / 20) * rng.standard_normal(audio.shape)).astype(np.float32)
    assert detect_content_end(audio, SR) == pytest.approx(1.25, abs=0.1)


def test_a_decaying_tail_is_content_until_it_falls_below_the_threshold():
    t = np.arange(int(2.0 * SR)) / SR
    decay = 0.8 * np.sin(2 * np.pi * 220 * t) * np.exp(-t / 0.25)  # -40 dB after 0.25 * ln(100) = 1.15 s
    audio = _stereo(decay, total=3.0)
    assert detect_content_end(audio, SR, relative_db=-40.0) == pytest.approx(0.25 * np.log(100), abs=0.1)


def test_content_to_the_end_of_the_file_and_pure_silence():
    assert detect_content_end(_stereo(_tone(2.0), total=2.0), SR) == pytest.approx(2.0, abs=0.01)
    assert detect_content_end(np.zeros((2, SR), np.float32), SR) == 0.0
    # Quiet but real content is still content when only the relative threshold applies.
    quiet = _stereo(_tone(1.0, amplitude=1e-4), total=2.0)
    assert detect_content_end(quiet, SR, absolute_db=None) == pytest.approx(1.0, abs=0.1)
    assert detect_content_end(quiet, SR) == 0.0  # below the absolute -60 dBFS floor


def test_timing_report_gives_overall_and_per_bin_errors():
    requested = [1.0, 1.5, 2.0, 2.5, 12.0]
    detected = [1.1, 1.5, 1.0, 2.5, 11.0]
    report = timing_report(detected, requested, bins=[0, 2, 10, 20])
    assert report.mae == pytest.approx((0.1 + 0 + 1.0 + 0 + 1.0) / 5)
    assert report.bias == pytest.approx((0.1 - 1.0 - 1.0) / 5)
    assert [b.count for b in report.bins] == [2, 2, 1]
    assert report.bins[0].mae == pytest.approx(0.05)
    assert report.bins[1].mae == pytest.approx(0.5)
    metrics = report.to_metrics()
    assert metrics["timing_mae_s"] == pytest.approx(report.mae)
    assert metrics["timing_mae_s_10-20s"] == pytest.approx(1.0)


def test_default_bins_cover_every_request():
    report = timing_report([1.2, 2.9, 2.0], [1.2, 2.97, 2.0])
    assert sum(b.count for b in report.bins) == 3
    with pytest.raises(ValueError):
        timing_report([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="ascending"):
        timing_report([1.0], [1.0], bins=[2, 1])


def test_timing_plot_is_a_png(tmp_path):
    path = plot_timing([1.0, 2.1, 2.9], [1.0, 2.0, 3.0], str(tmp_path / "timing.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_end_counts_as_timed_only_inside_the_requested_second():
    from sa_train.evaluation.timing import within_requested_second

    requested = [3.0, 3.0, 3.0, 3.0, 2.5, 2.5, 1.0]
    detected = [2.5, 3.2, 3.4, 1.6, 1.9, 2.6, 0.3]
    # 3 s: (2, 3] +-0.25 -> 2.5 yes, 3.2 yes, 3.4 late, 1.6 early; 2.5 s: (2, 2.5] -> 1.9 yes, 2.6 yes; 1 s: 0.3 yes
    assert within_requested_second(detected, requested).tolist() == [True, True, False, False, True, True, True]
    assert within_requested_second([2.9], [3.0], tolerance=0.0).tolist() == [True]
    assert within_requested_second([2.0], [3.0], tolerance=0.0).tolist() == [False]
