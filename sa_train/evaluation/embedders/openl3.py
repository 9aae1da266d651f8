"""OpenL3 frame embeddings, as the paper's FD_openl3 uses them (needs the ``openl3`` package).

mel256 input, music content, 512-d per channel, 0.5 s hop (1 s windows); left and right embedded
separately and concatenated (1024-d), mono duplicated. The ``openl3`` package (TensorFlow based)
ships its weights, so nothing is downloaded at run time. It is imported only when this embedder
is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sa_train.evaluation.audio import as_channels
from sa_train.evaluation.embedders import require_package


class OpenL3Embedder:
    """``embed(audio (channels, samples), sr) -> (frames, 2 * embedding_size)``."""

    name = "openl3"
    sample_rate = 48000  # OpenL3's own rate; it resamples its input itself

    def __init__(self, input_repr: str = "mel256", content_type: str = "music", embedding_size: int = 512,
                 hop_seconds: float = 0.5, batch_size: int = 32):
        self._openl3 = require_package("openl3", "openl3", "the openl3 embedder (FD_openl3)")
        self.settings: dict[str, Any] = {
            "version": 1, "input_repr": input_repr, "content_type": content_type,
            "embedding_size": embedding_size, "hop_seconds": hop_seconds, "center": True,
        }
        self._batch_size = batch_size
        self._model = self._openl3.models.load_audio_embedding_model(
            input_repr=input_repr, content_type=content_type, embedding_size=embedding_size
        )

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        x = as_channels(audio)
        if x.shape[0] == 1:
            x = np.repeat(x, 2, axis=0)
        elif x.shape[0] != 2:
            raise ValueError(f"the openl3 embedder takes mono or stereo audio; got {x.shape[0]} channels")
        per_channel = []
        for channel in x:
            emb, _ = self._openl3.get_audio_embedding(
                channel, sr, model=self._model, hop_size=self.settings["hop_seconds"], center=True,
                batch_size=self._batch_size, verbose=False,
            )
            per_channel.append(np.asarray(emb, dtype=np.float64))
        return np.concatenate(per_channel, axis=1)
