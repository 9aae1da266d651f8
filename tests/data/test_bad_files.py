"""Bad files are counted per reason, surface as metrics, and stop a broken corpus early."""

from __future__ import annotations

import logging

import pytest

from audio_helpers import write_audio
from sa_train.data.bad_files import BadDataError, BadFileCounter, check_bad_fraction
from sa_train.data.config import DataConfig
from sa_train.data.decode import BadFile
from sa_train.data.pipeline import iter_local_batches


def test_counter_counts_per_reason_and_reports_metrics():
    counter = BadFileCounter()
    counter.add_good(8)
    counter.add_bad(BadFile("/a.wav", "unreadable", "x"))
    counter.add_bad(BadFile("/b.wav", "unreadable", "x"))
    metrics = counter.metrics()
    assert metrics["data/files_seen"] == 10 and metrics["data/bad_files"] == 2
    assert metrics["data/bad_fraction"] == pytest.approx(0.2) and metrics["data/bad/unreadable"] == 2


def test_only_the_first_few_paths_per_reason_are_kept_and_logged(caplog):
    counter = BadFileCounter()
    with caplog.at_level(logging.WARNING, logger="sa_train.data.bad_files"):
        for i in range(50):
            counter.add_bad(BadFile(f"/bad{i}.wav", "silent", "quiet"))
    assert counter.counts["silent"] == 50
    assert len(counter.examples["silent"]) == 5 and len(caplog.records) == 5
    assert "/bad0.wav" in caplog.text and "/bad9.wav" not in caplog.text


def test_merge_adds_counts_of_another_counter():
    a, b = BadFileCounter(), BadFileCounter()
    a.add_good(3)
    b.add_bad(BadFile("/x.wav", "too_short"))
    a.merge(b)
    assert a.seen == 4 and a.counts == {"too_short": 1} and a.example_paths() == {"too_short": ["/x.wav"]}


def test_bad_fraction_above_limit_names_worst_reasons_and_paths():
    with pytest.raises(BadDataError) as err:
        check_bad_fraction({"unreadable": 7, "silent": 2}, 100, 0.05, {"unreadable": ["/u1.wav", "/u2.wav"]})
    message = str(err.value)
    assert "9 of 100" in message and "data.max_bad_fraction" in message
    assert message.index("unreadable") < message.index("silent") and "/u1.wav" in message
    assert "sa-train data check" in message


def test_bad_fraction_at_or_below_limit_passes():
    check_bad_fraction({"unreadable": 1}, 100, 0.01)
    check_bad_fraction({}, 0, 0.0)


def test_small_samples_are_not_judged_before_min_files():
    check_bad_fraction({"unreadable": 1}, 3, 0.01, min_files=10)
    with pytest.raises(BadDataError):
        check_bad_fraction({"unreadable": 1}, 10, 0.01, min_files=10)


def test_local_iterator_skips_bad_files_and_counts_them(bad_corpus):
    folder, expected = bad_corpus
    counter = BadFileCounter()
    cfg = DataConfig(sources=[folder], max_bad_fraction=1.0)
    batches = list(iter_local_batches(cfg, batch_size=2, seed=0, counter=counter))
    assert sum(len(b) for b in batches) == 3  # the three good files
    assert counter.seen == 3 + len(expected)
    assert dict(counter.counts) == {reason: 1 for reason in expected.values()}


def test_local_iterator_stops_with_a_clear_error_on_a_broken_corpus(bad_corpus):
    folder, _ = bad_corpus
    with pytest.raises(BadDataError, match="max_bad_fraction=0.1"):
        list(iter_local_batches(DataConfig(sources=[folder], max_bad_fraction=0.1), batch_size=2, seed=0))


def test_good_corpus_trains_through_every_epoch(tmp_path):
    for i in range(3):
        write_audio(tmp_path / f"{i}.wav", seconds=1.0)
    batches = list(iter_local_batches(DataConfig(sources=[str(tmp_path)], max_bad_fraction=0.0), 2, 0, epochs=2))
    assert [len(b) for b in batches] == [2, 2, 2]
