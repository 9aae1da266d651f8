"""A timing error is a figure only where it can fail: the clip must run on past its requested length."""

from __future__ import annotations

import json
import os

import numpy as np
import soundfile

from sa_train.evaluation.evaluate import run_evaluation
from sa_train.evaluation.timing import MIN_ROOM_SECONDS, timing_measurable

SR = 16000


def _folder(tmp_path, clips):
    """``clips``: (clip seconds, content seconds, requested seconds) -> a generate-style folder."""
    folder = tmp_path / "generated"
    folder.mkdir()
    rows = []
    for i, (clip_seconds, content_seconds, requested) in enumerate(clips):
        audio = np.zeros((int(clip_seconds * SR), 2), np.float32)
        t = np.arange(int(content_seconds * SR)) / SR
        audio[: t.size] = 0.5 * np.sin(2 * np.pi * 440 * t)[:, None]
        soundfile.write(os.path.join(folder, f"{i}.wav"), audio, SR, subtype="PCM_16")
        rows.append({"path": f"{i}.wav", "prompt": "a sine tone", "seconds_total": requested})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def _evaluate(folder, tmp_path):
    return run_evaluation(folder, embedder=None, tagger=None, out_dir=str(tmp_path / "report"))


def test_a_clip_needs_room_after_its_requested_length():
    assert timing_measurable(2.0, 4.0)
    assert timing_measurable(3.9, 4.0)  # exactly MIN_ROOM_SECONDS of room
    assert not timing_measurable(4.0, 4.0)  # as long as the clip: a late end cannot show
    assert not timing_measurable(2.0, 0.09)  # longer than the clip (the old tiny sweeps' window)
    assert MIN_ROOM_SECONDS == 0.1


def test_clips_cut_at_or_before_their_request_have_no_timing_figure_instead_of_a_zero(tmp_path):
    # A 0.09 s window asked for 1-3 s: the content fills every clip, so the error would read 0 whatever the model does.
    folder = _folder(tmp_path, [(0.09, 0.09, 1.0), (0.09, 0.09, 2.0), (0.09, 0.09, 3.0)])
    result = _evaluate(folder, tmp_path)

    assert result.timing is None
    assert not [k for k in result.metrics if k.startswith("timing_") and k != "timing_num_unmeasurable"]
    assert result.metrics["timing_num_unmeasurable"] == 3
    assert any("timing accuracy is not measurable" in note for note in result.notes)
    assert all(c.timing_measurable is False and c.detected_end_s is None for c in result.clips)
    saved = json.loads((tmp_path / "report" / "evaluation.json").read_text())
    assert "timing_mae_s" not in saved["metrics"] and saved["clips"][0]["detected_end_s"] is None


def test_timing_is_measured_over_the_clips_with_room_only(tmp_path):
    # Two 4 s clips that end 0.5 s late, and one clip cut at its request (it would add an error of 0).
    folder = _folder(tmp_path, [(4.0, 1.5, 1.0), (4.0, 2.5, 2.0), (3.0, 3.0, 3.0)])
    result = _evaluate(folder, tmp_path)

    assert result.metrics["timing_num_clips"] == 2 and result.metrics["timing_num_unmeasurable"] == 1
    assert abs(result.metrics["timing_mae_s"] - 0.5) < 0.05
    assert any("over the other 2 clips only" in note for note in result.notes)
