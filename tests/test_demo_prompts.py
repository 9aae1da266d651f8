"""The demo's prompts ask only for lengths its training data teaches."""

import torch

from sa_train.data.synth import synth_example
from sa_train.demo import DEMO_PROMPTS, DIFFUSION_WINDOW, SYNTH_SECONDS
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
