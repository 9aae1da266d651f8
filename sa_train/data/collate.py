"""The Ray Data collate function that turns worker batches into :class:`AudioBatch`.

Ray 2.47+ wants a class for ``iter_torch_batches(collate_fn=...)``::

    for batch in shard.iter_torch_batches(batch_size=n, collate_fn=AudioBatchCollate()):
        batch = batch.to(device)   # AudioBatch is not moved by Ray; move it yourself
"""

from __future__ import annotations

from typing import Dict

import numpy as np
from ray.data.collate_fn import NumpyBatchCollateFn

from sa_train.data.batch import AudioBatch


class AudioBatchCollate(NumpyBatchCollateFn):
    """Numpy column dict -> :class:`AudioBatch` (audio or latents)."""

    def __call__(self, batch: Dict[str, np.ndarray]) -> AudioBatch:
        return AudioBatch.from_numpy_dict(batch)
