"""`sa-train data check`: every bad file reported with its reason, a clean manifest that trains."""

from __future__ import annotations

import argparse
import json

import numpy as np
import soundfile

from audio_helpers import names, write_audio
from sa_train.cli.data import register
from sa_train.data.check import check_records, format_report, probe_file, write_manifest
from sa_train.data.config import DataConfig
from sa_train.data.pipeline import iter_local_batches
from sa_train.data.sources import AudioRecord, collect_records


def run_cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_check_reports_each_bad_file_with_its_reason(bad_corpus):
    folder, expected = bad_corpus
    report = check_records(collect_records([folder]), use_ray=False, progress=False)
    assert {b.path.rsplit("/", 1)[1]: b.reason for b in report.bad} == expected
    assert names(f.path for f in report.files) == {"good_a.wav", "good_b.flac", "good_c.ogg"}
    text = format_report(report)
    for name, reason in expected.items():
        assert name in text and reason in text
    assert "captions missing: 2 of 3" in text and "22050 Hz x 1" in text and "1 ch x 1" in text


def test_full_scan_finds_nan_late_in_a_file_that_a_quick_scan_misses(tmp_path):
    audio = np.full((44100 * 3, 2), 0.1, np.float32)
    audio[70000] = np.nan
    path = str(tmp_path / "late_nan.wav")
    soundfile.write(path, audio, 44100, subtype="FLOAT")
    assert probe_file(AudioRecord(path), min_seconds=0.5).reason == "non_finite"
    assert probe_file(AudioRecord(path), min_seconds=0.5, full=False).duration == 3.0


def test_manifest_of_good_files_trains_directly(bad_corpus, tmp_path):
    folder, _ = bad_corpus
    report = check_records(collect_records([folder]), use_ray=False, progress=False)
    out = tmp_path / "clean" / "manifest.jsonl"
    write_manifest(report, str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    a = next(r for r in rows if r["path"].endswith("good_a.wav"))
    assert a["caption"] == "a tone at A4" and a["duration"] == 2.0 and a["sample_rate"] == 44100 and a["channels"] == 2
    cfg = DataConfig(sources=[str(out)], max_bad_fraction=0.0)
    batches = list(iter_local_batches(cfg, batch_size=3, seed=0))
    assert len(batches) == 1 and len(batches[0]) == 3 and "a tone at A4" in batches[0].prompts


def test_duration_histogram_counts_every_good_file(tmp_path):
    for i, seconds in enumerate([0.6, 2, 7, 7]):
        write_audio(tmp_path / f"{i}.wav", seconds=seconds, sample_rate=8000, channels=1)
    report = check_records(collect_records([str(tmp_path)]), use_ray=False, progress=False)
    histogram = dict(report.duration_histogram())
    assert histogram["< 1 s"] == 1 and histogram["1-5 s"] == 1 and histogram["5-10 s"] == 2
    assert sum(histogram.values()) == 4


def test_cli_check_writes_manifest_and_fails_above_the_bad_fraction(bad_corpus, tmp_path, capsys):
    folder, expected = bad_corpus
    out = str(tmp_path / "clean.jsonl")
    code = run_cli(["data", "check", folder, "--out", out, "--no-ray"])
    captured = capsys.readouterr()
    assert code == 1 and "above --max-bad-fraction" in captured.err
    assert all(name in captured.out for name in expected)
    assert len(open(out).read().splitlines()) == 3
    assert run_cli(["data", "check", folder, "--no-ray", "--max-bad-fraction", "0.7"]) == 0


def test_cli_check_on_a_missing_path_says_so(tmp_path, capsys):
    assert run_cli(["data", "check", str(tmp_path / "nope"), "--no-ray"]) == 2
    assert "does not exist" in capsys.readouterr().err
