"""Decoding one window: formats, rates, channels, timing values, padding, seeking, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile

from audio_helpers import dominant_frequency, write_audio
from sa_train.data.config import DataConfig
from sa_train.data.decode import BadFile, Example, Reason, apply_channel_policy, read_window

WINDOW = 131072  # the tiny config's window, 2.97 s at 44.1 kHz


def decode(path, cfg=None, seed=0, **kwargs):
    return read_window(path, cfg or DataConfig(), np.random.default_rng(seed), **kwargs)


FORMATS = [  # (file name, libsndfile major format, write options)
    ("tone.wav", "WAV", {}),
    ("tone.flac", "FLAC", {"subtype": "PCM_24"}),
    ("tone.ogg", "OGG", {"subtype": "VORBIS"}),
    ("tone.mp3", "MP3", {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
    ("tone.opus", "OGG", {"format": "OGG", "subtype": "OPUS", "sample_rate": 48000}),
    ("tone.aiff", "AIFF", {}),
    ("tone.aif", "AIFF", {"format": "AIFF", "subtype": "PCM_16"}),
    ("u8.wav", "WAV", {"subtype": "PCM_U8"}),
    ("s24.wav", "WAV", {"subtype": "PCM_24"}),
    ("float.wav", "WAV", {"subtype": "FLOAT"}),
]


@pytest.mark.parametrize("name,major,kwargs", FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_decodes_to_the_tone_it_holds(tmp_path, name, major, kwargs):
    if major not in soundfile.available_formats():
        pytest.skip(f"this libsndfile cannot write {major}")
    path = write_audio(tmp_path / name, seconds=2.0, **kwargs)
    example = decode(path)
    assert isinstance(example, Example), example
    assert example.audio.shape == (2, WINDOW) and example.audio.dtype == np.float32
    real = int(example.padding_mask.sum())
    assert abs(real - 2.0 * 44100) <= 2048  # codecs may add or trim a frame's worth
    assert example.padding_mask[:real].all() and not example.padding_mask[real:].any()
    assert not example.audio[:, real:].any()
    assert dominant_frequency(example.audio[0, :real], 44100) == pytest.approx(440, abs=3)
    assert 0.35 < np.abs(example.audio).max() <= 1.0  # written at 0.5 peak
    assert example.seconds_start == 0 and example.seconds_total == 2


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_odd_sample_rates_are_resampled_keeping_pitch_and_length(tmp_path, rate):
    path = write_audio(tmp_path / "odd.wav", seconds=1.5, sample_rate=rate, frequency=300.0)
    example = decode(path)
    assert example.padding_mask.sum() == math.ceil(round(1.5 * rate) * 44100 / rate)
    real = int(example.padding_mask.sum())
    assert dominant_frequency(example.audio[1, :real], 44100) == pytest.approx(300, abs=2)
    assert example.seconds_total == 2 and example.source_sample_rate == rate


def test_mono_is_duplicated_to_both_channels(tmp_path):
    example = decode(write_audio(tmp_path / "mono.flac", channels=1))
    assert example.audio.shape[0] == 2
    np.testing.assert_array_equal(example.audio[0], example.audio[1])
    assert np.abs(example.audio[0]).max() > 0.4


def six_channel_file(tmp_path) -> str:
    levels = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=np.float32)  # L R C LFE Ls Rs
    path = str(tmp_path / "surround.wav")
    soundfile.write(path, np.tile(levels, (44100, 1)), 44100, subtype="FLOAT")
    return path


def test_six_channels_are_folded_down_without_lfe(tmp_path):
    example = decode(six_channel_file(tmp_path))
    g = 1 / math.sqrt(2)
    left, right = (0.1 + g * 0.3 + g * 0.5) / (1 + 2 * g), (0.2 + g * 0.3 + g * 0.6) / (1 + 2 * g)
    np.testing.assert_allclose(example.audio[:, 100], [left, right], rtol=1e-5)


def test_six_channels_can_be_truncated_to_the_first_two(tmp_path):
    example = decode(six_channel_file(tmp_path), DataConfig(extra_channels="truncate"))
    np.testing.assert_allclose(example.audio[:, 100], [0.1, 0.2], rtol=1e-6)


def test_other_layouts_average_channels_round_robin():
    audio = np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    np.testing.assert_allclose(apply_channel_policy(audio, 2, "downmix")[:, 0], [2.0, 3.0])
    np.testing.assert_allclose(apply_channel_policy(audio, 1, "downmix")[:, 0], [2.5])


def test_short_file_is_padded_with_silence_and_masked(tmp_path):
    path = write_audio(tmp_path / "short.wav", frames=50000)  # 1.13 s
    example = decode(path)
    assert example.padding_mask.sum() == 50000
    assert not example.padding_mask[50000:].any() and not example.audio[:, 50000:].any()
    assert example.seconds_start == 0 and example.seconds_total == 2  # ceil(1.13)


def test_whole_seconds_file_total_is_not_rounded_up(tmp_path):
    assert decode(write_audio(tmp_path / "two.wav", frames=88200)).seconds_total == 2


def ramp_file(tmp_path, frames: int, rate: int = 44100) -> str:
    """A mono float file whose sample i holds i / frames, so a window reveals its own offset."""
    path = str(tmp_path / "ramp.wav")
    soundfile.write(path, (np.arange(frames) / frames).astype(np.float32), rate, subtype="FLOAT")
    return path


def test_random_crop_offset_matches_audio_and_timing_values(tmp_path):
    frames = 44100 * 10 + 123  # 10.003 s
    path = ramp_file(tmp_path, frames)
    offsets = set()
    for seed in range(20):
        example = decode(path, seed=seed)
        offsets.add(example.offset)
        assert 0 <= example.offset <= frames - WINDOW
        assert example.audio[0, 0] == pytest.approx(example.offset / frames, abs=1e-6)
        assert example.audio[0, -1] == pytest.approx((example.offset + WINDOW - 1) / frames, abs=1e-6)
        assert example.padding_mask.all()
        assert example.seconds_start == example.offset // 44100
        assert example.seconds_total == 11
    assert len(offsets) > 15  # crops differ between draws


def test_start_crop_reads_from_the_beginning(tmp_path):
    example = decode(ramp_file(tmp_path, 44100 * 5), DataConfig(crop="start"))
    assert example.offset == 0 and example.audio[0, 0] == 0 and example.seconds_start == 0


def test_crop_offset_in_source_samples_sets_seconds_start_at_48k(tmp_path):
    path = write_audio(tmp_path / "long48.wav", seconds=20, sample_rate=48000, channels=1)
    for seed in range(5):
        example = decode(path, seed=seed)
        assert example.source_sample_rate == 48000
        assert example.seconds_start == example.offset // 48000
        assert example.offset <= 20 * 48000 - math.ceil(WINDOW * 48000 / 44100)
        assert example.padding_mask.all()


class CountingFile:
    """A binary file that counts the bytes soundfile reads through it."""

    def __init__(self, path):
        self.file, self.bytes_read = open(path, "rb"), 0

    def read(self, n=-1):
        data = self.file.read(n)
        self.bytes_read += len(data)
        return data

    def seek(self, offset, whence=0):
        return self.file.seek(offset, whence)

    def tell(self):
        return self.file.tell()


def test_ten_minute_file_reads_only_the_95_second_window(tmp_path, monkeypatch):
    rate = 8000  # 10 minutes at 8 kHz mono keeps the file at 9.6 MB
    path = write_audio(tmp_path / "ten_minutes.wav", seconds=600, sample_rate=rate, channels=1)
    cfg = DataConfig(sample_rate=rate, window_samples=95 * rate)
    frames_read = []
    original = soundfile.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        frames_read.append(frames)
        return original(self, frames, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", spy)
    counting = CountingFile(path)
    example = read_window(counting, cfg, np.random.default_rng(3), path=path)
    assert isinstance(example, Example) and example.offset > 0
    assert frames_read == [95 * rate]
    size = 600 * rate * 2
    assert counting.bytes_read < 0.2 * size  # the window is 95 / 600 = 16% of the file


def test_phase_flip_inverts_the_window(tmp_path):
    path = write_audio(tmp_path / "tone.wav")
    plain = decode(path, DataConfig(phase_flip_probability=0.0), seed=1)
    flipped = decode(path, DataConfig(phase_flip_probability=1.0), seed=1)
    np.testing.assert_array_equal(flipped.audio, -plain.audio)
    np.testing.assert_array_equal(flipped.padding_mask, plain.padding_mask)


def test_samples_beyond_full_scale_are_clipped(tmp_path):
    path = str(tmp_path / "loud.wav")
    soundfile.write(path, np.full((44100, 2), 1.5, np.float32), 44100, subtype="FLOAT")
    assert decode(path).audio.max() == 1.0


def test_bad_files_come_back_with_their_reason(bad_corpus):
    folder, expected = bad_corpus
    for name, reason in expected.items():
        result = decode(f"{folder}/{name}")
        assert isinstance(result, BadFile), name
        assert result.reason == reason, (name, result)
        assert result.path.endswith(name) and result.detail


def test_missing_file_is_reported_not_raised(tmp_path):
    assert decode(str(tmp_path / "gone.wav")).reason == Reason.MISSING


def test_flac_cut_mid_stream_is_a_decode_error(tmp_path):
    full = open(write_audio(tmp_path / "whole.flac", seconds=2.0, amplitude=0.9), "rb").read()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full[: len(full) // 2])
    result = decode(str(cut), DataConfig(crop="start"))
    assert isinstance(result, BadFile) and result.reason in (Reason.DECODE_ERROR, Reason.TRUNCATED)


def test_silence_inside_a_longer_file_is_kept(tmp_path):
    path = str(tmp_path / "quiet_start.wav")
    audio = np.zeros((44100 * 6, 2), np.float32)
    audio[-4410:] = 0.5  # sound only in the last 0.1 s
    soundfile.write(path, audio, 44100)
    assert isinstance(decode(path, DataConfig(crop="start")), Example)


def test_remote_uri_is_decoded_through_the_filesystem_layer(tmp_path):
    path = write_audio(tmp_path / "remote.flac", seconds=1.2)
    example = decode(f"file://{path}")
    assert isinstance(example, Example) and example.path == f"file://{path}"
    assert example.padding_mask.sum() == round(1.2 * 44100)


def _ramp_file(tmp_path, frames=44100):
    """A mono float WAV whose every sample is distinct, so a window shows where it was cut."""
    path = str(tmp_path / "ramp.wav")
    soundfile.write(path, (np.arange(frames, dtype=np.float32) / frames - 0.5), 44100, subtype="FLOAT")
    return path, np.arange(frames, dtype=np.float32) / frames - 0.5


def test_end_crops_hold_the_files_last_samples_then_silence_marked_as_padding(tmp_path):
    path, samples = _ramp_file(tmp_path)
    cfg = DataConfig(window_samples=8192, end_crop_probability=1.0)
    reals = []
    for seed in range(40):
        example = decode(path, cfg, seed=seed)
        real = int(example.padding_mask.sum())
        assert 1 <= real <= 8191
        assert example.padding_mask[:real].all() and not example.padding_mask[real:].any()
        np.testing.assert_array_equal(example.audio[0, :real], samples[-real:])
        np.testing.assert_array_equal(example.audio[1, :real], samples[-real:])
        assert not example.audio[:, real:].any()
        assert example.seconds_start == (44100 - real) // 44100 and example.seconds_total == 1
        reals.append(real)
    assert len(set(reals)) > 30  # the overhang is drawn anew for every crop


def test_end_crop_probability_sets_the_share_of_crops_that_overhang_the_end(tmp_path):
    path, _ = _ramp_file(tmp_path)
    never = [decode(path, DataConfig(window_samples=8192), seed=s) for s in range(100)]
    assert all(e.padding_mask.all() for e in never)  # the default: every crop inside the file
    some = [decode(path, DataConfig(window_samples=8192, end_crop_probability=0.25), seed=s) for s in range(400)]
    share = np.mean([not e.padding_mask.all() for e in some])
    assert 0.18 < share < 0.32  # 0.25 +- 3 binomial standard deviations (0.022)


def test_end_crops_leave_start_crops_and_short_files_alone(tmp_path):
    path, samples = _ramp_file(tmp_path)
    start = decode(path, DataConfig(window_samples=8192, crop="start", end_crop_probability=1.0), seed=3)
    assert start.padding_mask.all() and start.offset == 0
    short = decode(path, DataConfig(window_samples=WINDOW, end_crop_probability=1.0), seed=3)
    assert int(short.padding_mask.sum()) == 44100 and short.offset == 0
