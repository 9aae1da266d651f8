"""`evaluate_folder` and `sa-train evaluate` end to end on tiny generated and reference folders."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile

from sa_train.cli.main import main
from sa_train.data.synth import synth_example, write_synth_dataset
from sa_train.evaluation.embedders.spectral import SpectralEmbedder
from sa_train.evaluation.evaluate import evaluate_folder, run_evaluation

SR = 44100
NUM = 8
WINDOW_SECONDS = 3.0


def _write_generated(folder, make_audio):
    """A generate-style folder: one full-window WAV per synthetic caption, and manifest.jsonl."""
    os.makedirs(folder)
    rows = []
    for i in range(NUM):
        audio, caption, fields = synth_example(i, 0, max_seconds=2.5)
        clip = make_audio(i, audio)
        name = f"{i:04d}.wav"
        soundfile.write(os.path.join(folder, name), clip, SR, subtype="PCM_16")
        rows.append({"path": name, "prompt": caption, "seconds_total": fields["seconds"], "seconds_start": 0})
    with open(os.path.join(folder, "manifest.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(folder)


def _faithful(i, audio):
    """What a perfect model would give: the caption's audio, then silence to the window's end."""
    full = np.zeros((int(WINDOW_SECONDS * SR), 2), np.float32)
    full[: len(audio)] = audio
    return full


def _noise(i, audio):
    """A model that ignores its prompt: white noise over the whole window."""
    rng = np.random.default_rng(i)
    return (0.3 * rng.standard_normal((int(WINDOW_SECONDS * SR), 2))).clip(-1, 1).astype(np.float32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    write_synth_dataset(str(root / "reference"), NUM, seed=0, fmt="wav", max_seconds=2.5)
    return {
        "reference": str(root / "reference"),
        "good": _write_generated(root / "good", _faithful),
        "bad": _write_generated(root / "bad", _noise),
        "cache": str(root / "cache"),
    }


class CountingEmbedder(SpectralEmbedder):
    """The spectral embedder (same name and settings, so the same cache key), counting its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def embed(self, audio, sr):
        self.calls += 1
        return super().embed(audio, sr)


def test_a_faithful_generator_scores_better_than_noise_on_every_metric(folders, tmp_path):
    good = evaluate_folder(folders["good"], folders["reference"], cache_dir=folders["cache"], out_dir=str(tmp_path / "g"))
    bad = evaluate_folder(folders["bad"], folders["reference"], cache_dir=folders["cache"], out_dir=str(tmp_path / "b"))

    for metrics in (good, bad):
        assert {"fd_spectral", "kl_synth_kind_ref_gen", "timing_mae_s", "adherence_pass_rate"} <= set(metrics)
        assert all(np.isfinite(v) for v in metrics.values())
    assert good["num_clips"] == NUM and good["kl_num_matched"] == NUM
    assert good["fd_spectral"] < bad["fd_spectral"]
    assert good["kl_synth_kind_ref_gen"] < 0.05 < bad["kl_synth_kind_ref_gen"]
    assert good["timing_mae_s"] < bad["timing_mae_s"]
    assert bad["timing_bias_s"] > 0.3  # noise runs to the end of the window: content ends late
    assert good["adherence_pass_rate"] == 1.0 and bad["adherence_pass_rate"] < 0.5


def test_reports_are_written(folders, tmp_path):
    out = tmp_path / "report"
    result = run_evaluation(folders["good"], folders["reference"], cache_dir=folders["cache"], out_dir=str(out))
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["metrics"]["fd_spectral"] == pytest.approx(result.metrics["fd_spectral"])
    assert saved["settings"]["kl_direction"] == "KL(reference || generated)"
    assert len(saved["clips"]) == NUM and saved["clips"][0]["detected_end_s"] is not None
    markdown = (out / "evaluation.md").read_text()
    assert "fd_spectral" in markdown and "Timing by requested length" in markdown
    assert (out / "timing.png").read_bytes()[:4] == b"\x89PNG"


def test_reference_statistics_are_cached_and_refreshed_when_the_reference_changes(folders, tmp_path):
    reference = str(tmp_path / "reference")
    shutil.copytree(folders["reference"], reference)
    cache = str(tmp_path / "cache")
    kwargs = dict(reference=reference, tagger=None, cache_dir=cache, write_report=False)

    first = CountingEmbedder()
    fd_first = evaluate_folder(folders["good"], embedder=first, **kwargs)["fd_spectral"]
    assert first.calls == 2 * NUM  # reference and generated clips
    (cached,) = os.listdir(cache)
    mtime = os.stat(os.path.join(cache, cached)).st_mtime_ns

    second = CountingEmbedder()
    assert evaluate_folder(folders["good"], embedder=second, **kwargs)["fd_spectral"] == pytest.approx(fd_first)
    assert second.calls == NUM  # only the generated clips: the reference came from the cache
    assert os.listdir(cache) == [cached] and os.stat(os.path.join(cache, cached)).st_mtime_ns == mtime

    first_file = sorted(f for f in os.listdir(reference) if f.endswith(".wav"))[0]
    audio, sr = soundfile.read(os.path.join(reference, first_file))
    soundfile.write(os.path.join(reference, first_file), 0.5 * audio, sr, subtype="PCM_16")
    third = CountingEmbedder()
    evaluate_folder(folders["good"], embedder=third, **kwargs)
    assert third.calls == 2 * NUM and len(os.listdir(cache)) == 2  # new content, new statistics


def test_a_stats_file_serves_as_reference_for_fd(folders, tmp_path):
    cache = str(tmp_path / "cache")
    from_folder = evaluate_folder(folders["good"], folders["reference"], tagger=None, cache_dir=cache, write_report=False)
    stats = str(tmp_path / "reference_stats.npz")
    shutil.copy(os.path.join(cache, os.listdir(cache)[0]), stats)

    result = run_evaluation(folders["good"], stats, cache_dir=cache, write_report=False)
    assert result.metrics["fd_spectral"] == pytest.approx(from_folder["fd_spectral"])
    assert "kl_synth_kind_ref_gen" not in result.metrics and any("KL" in n for n in result.notes)
    with pytest.raises(ValueError, match="made by embedder"):
        evaluate_folder(folders["good"], stats, embedder=SpectralEmbedder(n_mels=16), tagger=None, write_report=False)


def test_a_generated_folder_needs_a_manifest(folders, tmp_path):
    for name in os.listdir(folders["good"]):
        if name.endswith(".wav"):
            shutil.copy(os.path.join(folders["good"], name), tmp_path)
    with pytest.raises(ValueError, match="manifest.jsonl"):
        evaluate_folder(str(tmp_path), folders["reference"], write_report=False)


def test_cli_prints_the_metrics_as_json(folders, tmp_path, capsys):
    code = main(["-q", "evaluate", folders["good"], "--reference", folders["reference"], "--cache-dir",
                 folders["cache"], "--out", str(tmp_path / "out"), "--json", "--embedder", "none"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "fd_spectral" not in metrics and metrics["kl_synth_kind_ref_gen"] < 0.05
    assert metrics["adherence_pass_rate"] == 1.0
    assert (tmp_path / "out" / "evaluation.md").is_file()


def test_cli_reports_a_missing_folder_as_a_user_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_names_the_package_a_real_embedder_needs(folders, capsys, monkeypatch):
    import sys

    # A None entry in sys.modules makes the import fail as if torchopenl3 were not installed.
    for module in [m for m in sys.modules if m.startswith("torchopenl3")] + ["torchopenl3"]:
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["evaluate", folders["good"], "--reference", folders["reference"], "--embedder", "openl3",
                 "--openl3-weights", "random"]) == 2
    assert "pip install torchopenl3" in capsys.readouterr().err


def test_a_decoder_noise_floor_above_minus_60_dbfs_hides_the_end_unless_the_silence_floor_is_raised(tmp_path):
    """A VAE that decodes silence as hiss at -40 dBFS: at the default floor (-60 dBFS, or 40 dB under
    the loudest frame) the content runs to the window's end; with the floor 10 dB above the hiss,
    the clips end where they should (the chords, decaying into the raised floor, may end early)."""
    hiss = 10 ** (-40 / 20) * np.sqrt(2)  # sine amplitude of a -40 dBFS RMS tone, high in the band

    def hissing(i, audio):
        full = _faithful(i, audio)
        t = np.arange(full.shape[0]) / SR
        return full + (hiss * np.sin(2 * np.pi * 17000 * t)).astype(np.float32)[:, None]

    folder = _write_generated(tmp_path / "hiss", hissing)
    default = evaluate_folder(folder, embedder=None, tagger=None, write_report=False)
    raised = evaluate_folder(folder, embedder=None, tagger=None, write_report=False, silence_floor_db=-30.0)
    assert default["timing_within_second_fraction"] == 0.0
    assert raised["timing_within_second_fraction"] >= 0.75
    assert raised["timing_mae_s"] < default["timing_mae_s"] / 3
