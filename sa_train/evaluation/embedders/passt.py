"""PaSST AudioSet tagger, as the paper's KL_passt uses it (needs ``hear21passt``, the ``eval`` extra).

32 kHz mono, peak-normalised to -1 dBFS; 10 s windows every 5 s; logits averaged over the
windows, then softmax over the 527 AudioSet classes. Windows follow the paper's metric code
(stable-audio-metrics, after MusicGen's): they start every hop while more than one hop of audio
is left (always at 0); one running past the end is zero-padded to the full window unless it
holds 15% of a window or less, when it goes in as it is (padded to PaSST's shortest input,
16 mel frames = 0.16 s, where shorter still).

The model is ``hear21passt``'s PaSST-S (``passt_s_swa_p16_128_ap476``, the one its
``get_basic_model`` loads) with its mel front end, built here without its download; its
weights are the published ``passt-s-f128-p16-s10-ap.476-swa.pt`` (see
:mod:`sa_train.evaluation.embedders.weights` for where they come from).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any, Optional

import numpy as np

from sa_train.evaluation.audio import resample, to_mono
from sa_train.evaluation.embedders import require_package
from sa_train.evaluation.embedders.weights import (
    RANDOM, load_state_dict_file, load_strict, peak_normalize, resolve_device, seeded, weights_file, weights_label,
)

NUM_CLASSES = 527
ARCH = "passt_s_swa_p16_128_ap476"
WEIGHTS_NAME = "passt-s-f128-p16-s10-ap.476-swa.pt"
URL = f"https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/{WEIGHTS_NAME}"
WHAT = "the passt tagger (KL_passt)"
SHORT_WINDOW_FRACTION = 0.15
# PaSST's patches span 16 mel frames (hop 320): a shorter input cannot go through at all.
MIN_SAMPLES = 16 * 320


@contextlib.contextmanager
def _quiet():
    """hear21passt prints its whole model and tensor shapes to stdout and warns about deprecated
    torch calls it makes (stft with return_complex=False, cuda.amp.autocast): none is for the user."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of the analysis windows of a clip (the paper's metric code's rule)."""
    return list(range(0, max(hop, num_samples - hop), hop))


class PasstTagger:
    """``class_probabilities(audio (channels, samples), sr) -> (527,)``.

    Args:
        weights: weight file or folder, ``"random"`` or None (see the weights module).
        window_seconds, hop_seconds: analysis windows (10 s every 5 s in the paper's code).
        device: torch device; None or "auto" picks the GPU when there is one.
        batch_size: windows per forward pass.
        peak_normalize_dbfs: input peak level; None leaves the level alone.
        seed: the random weights' seed (``weights="random"`` only).
    """

    name = "passt"
    sample_rate = 32000
    classes = tuple(f"audioset_{i}" for i in range(NUM_CLASSES))

    def __init__(self, weights: Optional[str] = None, window_seconds: float = 10.0, hop_seconds: float = 5.0,
                 device: Optional[str] = None, batch_size: int = 8, peak_normalize_dbfs: Optional[float] = -1.0,
                 seed: int = 0):
        if not 0 < hop_seconds <= window_seconds <= 30:
            raise ValueError(f"passt needs 0 < hop_seconds ({hop_seconds}) <= window_seconds ({window_seconds}) "
                             "<= 30 (PaSST-S takes at most 10 s without loss; longer inputs lose their end)")
        if batch_size < 1:
            raise ValueError(f"passt batch_size ({batch_size}) must be >= 1")
        import torch

        with _quiet():
            passt = require_package("hear21passt.models.passt", "hear21passt", WHAT)
            preprocess = require_package("hear21passt.models.preprocess", "hear21passt", WHAT)
            wrapper = require_package("hear21passt.wrapper", "hear21passt", WHAT)
        self._torch = torch
        self.device = resolve_device(device)
        self._batch_size = batch_size
        self._peak_dbfs = peak_normalize_dbfs
        path = None if weights == RANDOM else weights_file(weights, WEIGHTS_NAME, URL, WHAT)
        with seeded(seed), _quiet():
            net = passt.get_model(arch=ARCH, pretrained=False, n_classes=NUM_CLASSES)
            # get_basic_model's front end, with fmax given so it need not print its choice.
            mel = preprocess.AugmentMelSTFT(n_mels=128, sr=self.sample_rate, win_length=800, hopsize=320, n_fft=1024,
                                            freqm=48, timem=192, htk=False, fmin=0.0, fmax=self.sample_rate // 2 - 1000,
                                            norm=1, fmin_aug_range=10, fmax_aug_range=2000)
        if path is not None:
            state = load_state_dict_file(path, WHAT)
            try:  # the package's own conversion of older checkpoints, as its download path applies it
                state = passt.checkpoint_filter_fn(state, net)
            except (KeyError, RuntimeError, ValueError) as err:
                raise ValueError(f"{WHAT}: weights file {path!r} does not fit the model (not a PaSST checkpoint?): "
                                 f"converting it failed at {err}") from None
            load_strict(net, state, path, WHAT)
        self.model = wrapper.PasstBasicWrapper(mel=mel, net=net, mode="logits").to(self.device).eval()
        self.settings: dict[str, Any] = {
            "version": 2, "model": f"hear21passt {ARCH} logits", "window_seconds": window_seconds,
            "hop_seconds": hop_seconds, "short_window_fraction": SHORT_WINDOW_FRACTION,
            "peak_normalize_dbfs": peak_normalize_dbfs, "weights": weights_label(weights, path, seed),
        }

    def windows(self, mono: np.ndarray) -> list[np.ndarray]:
        """``(samples,)`` at 32 kHz -> the analysis windows, each ``(window,)`` but a short lone one."""
        window = int(round(self.settings["window_seconds"] * self.sample_rate))
        hop = int(round(self.settings["hop_seconds"] * self.sample_rate))
        out = []
        for start in window_starts(mono.size, window, hop):
            piece = mono[start : start + window]
            if window * SHORT_WINDOW_FRACTION < piece.size < window:
                piece = np.pad(piece, (0, window - piece.size))
            elif piece.size < MIN_SAMPLES:
                piece = np.pad(piece, (0, MIN_SAMPLES - piece.size))
            out.append(piece)
        return out

    def logits(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """``audio: (channels, samples)`` -> ``(windows, 527)`` float64 logits."""
        mono = peak_normalize(to_mono(resample(audio, sr, self.sample_rate)), self._peak_dbfs)
        if mono.size == 0:
            raise ValueError("the passt tagger got an empty clip")
        pieces = self.windows(mono)
        # Only a lone window can be short, so equal lengths batch together.
        out = []
        with self._torch.inference_mode(), _quiet(), self._torch.random.fork_rng(devices=[]):
            # The mel front end draws augmentation offsets from torch's generator even in eval mode
            # (and then ignores them): fork_rng keeps the caller's random stream untouched.
            for start in range(0, len(pieces), self._batch_size):
                batch = np.stack(pieces[start : start + self._batch_size]).astype(np.float32)
                out.append(self.model(self._torch.from_numpy(batch).to(self.device)).double().cpu())
        return self._torch.cat(out).numpy()

    def class_probabilities(self, audio: np.ndarray, sr: int) -> np.ndarray:
        logits = self._torch.from_numpy(self.logits(audio, sr).mean(axis=0))
        return self._torch.softmax(logits, dim=0).numpy()
