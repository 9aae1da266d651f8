"""PaSST AudioSet tagger, as the paper's KL_passt uses it (needs the ``hear21passt`` package).

32 kHz mono; 10 s windows with 5 s overlap; logits averaged over the windows, then softmax over
the 527 AudioSet classes. ``hear21passt`` fetches its weights from GitHub on first use and keeps
them in the torch hub cache: choosing this tagger is choosing that download (pre-fetch them on
machines without network).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sa_train.evaluation.audio import resample, to_mono
from sa_train.evaluation.embedders import require_package

NUM_CLASSES = 527


class PasstTagger:
    """``class_probabilities(audio (channels, samples), sr) -> (527,)``."""

    name = "passt"
    sample_rate = 32000
    classes = tuple(f"audioset_{i}" for i in range(NUM_CLASSES))

    def __init__(self, window_seconds: float = 10.0, hop_seconds: float = 5.0, device: str = "cpu"):
        base = require_package("hear21passt.base", "hear21passt", "the passt tagger (KL_passt)")
        import torch

        self._torch = torch
        self.settings: dict[str, Any] = {"version": 1, "model": "hear21passt.base.get_basic_model(logits)",
                                         "window_seconds": window_seconds, "hop_seconds": hop_seconds}
        self._device = torch.device(device)
        self._model = base.get_basic_model(mode="logits").to(self._device).eval()

    def _windows(self, mono: np.ndarray) -> np.ndarray:
        """``(samples,)`` -> ``(windows, window)``; the last window ends at the clip's end."""
        window = int(self.settings["window_seconds"] * self.sample_rate)
        hop = int(self.settings["hop_seconds"] * self.sample_rate)
        if mono.size <= window:
            return mono[None]
        starts = list(range(0, mono.size - window + 1, hop))
        if starts[-1] + window < mono.size:
            starts.append(mono.size - window)
        return np.stack([mono[s : s + window] for s in starts])

    def class_probabilities(self, audio: np.ndarray, sr: int) -> np.ndarray:
        mono = to_mono(resample(audio, sr, self.sample_rate))
        batch = self._torch.from_numpy(np.ascontiguousarray(self._windows(mono))).to(self._device)
        with self._torch.no_grad():
            logits = self._model(batch).double().mean(dim=0)
        return self._torch.softmax(logits, dim=0).cpu().numpy()
