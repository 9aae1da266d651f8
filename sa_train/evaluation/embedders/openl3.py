"""OpenL3 frame embeddings, as the paper's FD_openl3 uses them (needs ``torchopenl3``, the ``eval`` extra).

mel256 input, music content, 512-d per channel, 1 s windows every 0.5 s (the first centred on
0 s, as openl3's ``center=True``), input at 48 kHz peak-normalised to -1 dBFS (as the paper's
metric code does). Left and right are embedded separately and concatenated (1024-d); mono is
embedded once and duplicated. Every frame of every file is one sample of the Frechet distance.

The model is torchopenl3's PyTorch port of OpenL3 (``torchopenl3.models.PytorchOpenl3``), its
weights the port's published ``torchopenl3_<repr>_<content>_<size>.pth.tar`` (see
:mod:`sa_train.evaluation.embedders.weights` for where they come from). The paper's code ran the
TensorFlow ``openl3``, which cannot be installed offline; the port reproduces its layers.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np

from sa_train.evaluation.audio import as_channels, resample
from sa_train.evaluation.embedders import require_package
from sa_train.evaluation.embedders.weights import (
    RANDOM, load_state_dict_file, load_strict, peak_normalize, resolve_device, seeded, weights_file, weights_label,
)

WHAT = "the openl3 embedder (FD_openl3)"
URL = "https://github.com/torchopenl3/torchopenl3-models/raw/master/{name}"
INPUT_REPRS = ("linear", "mel128", "mel256")
CONTENT_TYPES = ("music", "env")
EMBEDDING_SIZES = (512, 6144)


def weights_name(input_repr: str, content_type: str, embedding_size: int) -> str:
    """The published file name of one torchopenl3 variant's weights."""
    return f"torchopenl3_{input_repr}_{content_type}_{embedding_size}.pth.tar"


def _quietly_import():
    # torchopenl3 imports resampy, which warns about pkg_resources on import; nothing for the user.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = require_package("torchopenl3.models", "torchopenl3", WHAT)
        utils = require_package("torchopenl3.utils", "torchopenl3", WHAT)
    return models, utils


class OpenL3Embedder:
    """``embed(audio (channels, samples), sr) -> (frames, 2 * embedding_size)``.

    Args:
        weights: weight file or folder, ``"random"`` or None (see the weights module).
        device: torch device; None or "auto" picks the GPU when there is one.
        batch_size: 1 s frames per forward pass (all frames of a clip go through in such batches).
        peak_normalize_dbfs: input peak level; None leaves the level alone.
        seed: the random weights' seed (``weights="random"`` only).
    """

    name = "openl3"
    sample_rate = 48000

    def __init__(self, weights: Optional[str] = None, input_repr: str = "mel256", content_type: str = "music",
                 embedding_size: int = 512, hop_seconds: float = 0.5, batch_size: int = 64,
                 device: Optional[str] = None, peak_normalize_dbfs: Optional[float] = -1.0, seed: int = 0):
        for value, choices, key in ((input_repr, INPUT_REPRS, "input_repr"), (content_type, CONTENT_TYPES,
                                    "content_type"), (embedding_size, EMBEDDING_SIZES, "embedding_size")):
            if value not in choices:
                raise ValueError(f"openl3 {key} {value!r} is not one of {list(choices)}")
        if hop_seconds <= 0 or batch_size < 1:
            raise ValueError(f"openl3 hop_seconds ({hop_seconds}) must be > 0 and batch_size ({batch_size}) >= 1")
        import torch

        models, self._utils = _quietly_import()
        self._torch = torch
        self.device = resolve_device(device)
        self._batch_size = batch_size
        self._peak_dbfs = peak_normalize_dbfs
        path = None
        if weights != RANDOM:
            path = weights_file(weights, weights_name(input_repr, content_type, embedding_size),
                                URL.format(name=weights_name(input_repr, content_type, embedding_size)), WHAT)
        with seeded(seed), warnings.catch_warnings():
            # mel256 at 48 kHz has empty top mel bands; librosa warns, OpenL3 was trained that way.
            warnings.simplefilter("ignore", UserWarning)
            model = models.PytorchOpenl3(input_repr=input_repr, embedding_size=embedding_size,
                                         content_type=content_type)
        if path is not None:
            load_strict(model, load_state_dict_file(path, WHAT), path, WHAT)
        self.model = model.to(self.device).eval()
        # "version" changes whenever the numbers change, so cached reference stats are not reused.
        self.settings: dict[str, Any] = {
            "version": 2, "implementation": "torchopenl3", "input_repr": input_repr, "content_type": content_type,
            "embedding_size": embedding_size, "hop_seconds": hop_seconds, "center": True,
            "peak_normalize_dbfs": peak_normalize_dbfs, "weights": weights_label(weights, path, seed),
        }

    def _frames(self, x: np.ndarray) -> Any:
        """``x: (channels, samples)`` at 48 kHz -> ``(channels * frames, 1, 48000)``, channel-major."""
        audio = self._torch.from_numpy(np.ascontiguousarray(x))
        return self._utils.preprocess_audio_batch(audio, self.sample_rate, center=True,
                                                  hop_size=self.settings["hop_seconds"])

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = as_channels(audio)
        if x.shape[0] not in (1, 2):
            raise ValueError(f"the openl3 embedder takes mono or stereo audio; got {x.shape[0]} channels")
        x = peak_normalize(resample(x, sr, self.sample_rate), self._peak_dbfs)
        frames = self._frames(x)
        out = []
        with self._torch.inference_mode():
            for start in range(0, frames.shape[0], self._batch_size):
                batch = frames[start : start + self._batch_size].to(self.device, self._torch.float32)
                out.append(self.model(batch).double().cpu())
        per_channel = self._torch.cat(out).reshape(x.shape[0], -1, self.settings["embedding_size"])
        if x.shape[0] == 1:  # mono: the same embedding for left and right
            per_channel = per_channel.expand(2, -1, -1)
        return self._torch.cat(list(per_channel), dim=1).numpy()
