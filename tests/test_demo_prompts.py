"""The demo's prompts ask only for lengths its training data teaches, and only for endings its
training data shows."""

import numpy as np
import pytest
import torch

from sa_train.data.synth import KINDS, synth_example
from sa_train.demo import DEMO_PROMPTS, DIFFUSION_WINDOW, SYNTH_SECONDS
from sa_train.evaluation.adherence import parse_prompt
from sa_train.evaluation.timing import DEFAULT_ABSOLUTE_DB, detect_content_end, within_requested_second
from sa_train.models.conditioners.timing import conditioning_seconds

SAMPLE_RATE = 44100


def test_every_requested_length_selects_a_timing_embedding_that_training_files_had():
    low, high = SYNTH_SECONDS
    lengths = [synth_example(i, 0, sample_rate=SAMPLE_RATE, min_seconds=low, max_seconds=high)[0].shape[0] / SAMPLE_RATE
               for i in range(48)]
    _, trained = conditioning_seconds(torch.zeros(len(lengths)), torch.tensor(lengths))
    _, requested = conditioning_seconds(torch.zeros(len(DEMO_PROMPTS)), torch.tensor([s for _, s in DEMO_PROMPTS]))
    counts = {int(s): int((trained == s).sum()) for s in requested.unique()}
    assert all(n >= 5 for n in counts.values()), f"training files per requested seconds_total: {counts}"


def test_prompts_ask_for_at_least_four_lengths_that_fit_the_window_with_room_after():
    seconds = {s for _, s in DEMO_PROMPTS}
    assert len(seconds) >= 4
    assert max(seconds) + 1.0 <= DIFFUSION_WINDOW / SAMPLE_RATE  # silence after the end can be seen


def _training_clips_like(prompt: str, seconds: float, count: int) -> list:
    """``count`` clips the synthetic generator writes for files of the prompt's kind (and burst
    count, where it names one) and length: what the diffusion model is taught for this prompt."""
    targets = parse_prompt(prompt)
    kind_index = KINDS.index(targets.kind)
    clips = []
    for draw in range(400):
        audio, _, fields = synth_example(kind_index + 4 * draw, 1, min_seconds=seconds, max_seconds=seconds)
        if targets.bursts is None or fields["bursts"] == targets.bursts:
            clips.append(audio.T)
        if len(clips) == count:
            return clips
    raise AssertionError(f"the generator drew too few files like {prompt!r}")


@pytest.mark.parametrize("floor_dbfs", [DEFAULT_ABSOLUTE_DB, -45.0])
@pytest.mark.parametrize("prompt,seconds", DEMO_PROMPTS)
def test_the_training_datas_own_clips_of_each_prompt_end_in_the_requested_second(prompt, seconds, floor_dbfs):
    # The timing figure must measure the model, not the data: a model that reproduced its training
    # files exactly has to score 1.0. A decaying chord asked for 5 s fades under the detector's
    # threshold near 3 s, and 2 noise bursts in 5 s often end before 4 s; such prompts cannot pass.
    # -45 dBFS: the floor the demo's detector uses when the VAE decodes silence at -55 dBFS.
    window = np.zeros((2, DIFFUSION_WINDOW), dtype=np.float32)
    ends = []
    for clip in _training_clips_like(prompt, seconds, count=12):
        window[:] = 0
        window[:, : clip.shape[1]] = clip
        ends.append(detect_content_end(window, SAMPLE_RATE, absolute_db=floor_dbfs))
    inside = within_requested_second(ends, [seconds] * len(ends))
    assert inside.all(), f"{prompt!r}: the data's own clips end at {np.round(ends, 2).tolist()} s"
