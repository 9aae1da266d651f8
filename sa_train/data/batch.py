"""The batch contract shared by both training stages.

Every data path (decoded audio through Ray Data, the local iterator, pre-encoded latent shards)
yields column dictionaries with the names below; :meth:`AudioBatch.from_numpy_dict` turns one
into typed tensors; in a Ray Train worker use it through
:class:`sa_train.data.collate.AudioBatchCollate`::

    shard = ray.train.get_dataset_shard("train")
    for batch in shard.iter_torch_batches(batch_size=8, collate_fn=AudioBatchCollate()):
        batch = batch.to(device)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    import torch

# torch is imported where a batch becomes tensors, not here: Ray Data's read and crop tasks import
# this module for its column names, and a task process that imports torch spends 1.5-3 s of CPU on
# it while the training ranks wait for the same cores.

# Column names of the rows every pipeline yields.
AUDIO = "audio"  # (channels, samples) float32 in [-1, 1]
LATENTS = "latents"  # (latent_channels, frames) float
PADDING_MASK = "padding_mask"  # (samples,) or (frames,) bool, True = real audio
PROMPT = "prompt"  # str
SECONDS_START = "seconds_start"  # int, floor(crop offset / sample rate)
SECONDS_TOTAL = "seconds_total"  # int, ceil(whole file length / sample rate)
PATH = "path"  # str, the source file (for logging and debugging)


@dataclass
class AudioBatch:
    """One training batch of audio or latents with its conditioning.

    Attributes:
        audio: (batch, channels, samples) float32 audio, or (batch, latent_channels, frames)
            latents when ``is_latent``.
        padding_mask: (batch, samples) or (batch, frames) bool; True marks real audio, False
            the silence padding added to short files.
        prompts: ``batch`` text prompts.
        seconds_start: (batch,) long, the crop's start second in its source file.
        seconds_total: (batch,) long, the source file's length in whole seconds (rounded up).
        is_latent: whether ``audio`` holds autoencoder latents.
        paths: ``batch`` source paths (empty when the producer did not send them).
    """

    audio: torch.Tensor
    padding_mask: torch.Tensor
    prompts: list[str]
    seconds_start: torch.Tensor
    seconds_total: torch.Tensor
    is_latent: bool = False
    paths: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.audio.shape[0]
        if self.audio.dim() != 3:
            raise ValueError(f"AudioBatch.audio must be (batch, channels, length), got shape {tuple(self.audio.shape)}")
        if tuple(self.padding_mask.shape) != (n, self.audio.shape[-1]):
            raise ValueError(
                f"AudioBatch.padding_mask shape {tuple(self.padding_mask.shape)} does not match audio "
                f"{tuple(self.audio.shape)}; it must be (batch, length)"
            )
        for name in ("seconds_start", "seconds_total"):
            if tuple(getattr(self, name).shape) != (n,):
                raise ValueError(f"AudioBatch.{name} must have shape ({n},), got {tuple(getattr(self, name).shape)}")
        if len(self.prompts) != n:
            raise ValueError(f"AudioBatch has {n} examples but {len(self.prompts)} prompts")

    def __len__(self) -> int:
        return self.audio.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "AudioBatch":
        """A copy with every tensor on ``device``."""
        return AudioBatch(
            audio=self.audio.to(device, non_blocking=non_blocking),
            padding_mask=self.padding_mask.to(device, non_blocking=non_blocking),
            prompts=list(self.prompts),
            seconds_start=self.seconds_start.to(device, non_blocking=non_blocking),
            seconds_total=self.seconds_total.to(device, non_blocking=non_blocking),
            is_latent=self.is_latent,
            paths=list(self.paths),
        )

    @classmethod
    def from_numpy_dict(cls, batch: Mapping[str, Any]) -> "AudioBatch":
        """Build a batch from the column dict that Ray Data's ``iter_batches`` yields.

        ``batch`` holds ``audio`` (or ``latents``), ``padding_mask``, ``prompt``,
        ``seconds_start``, ``seconds_total`` and optionally ``path``; values may be numpy arrays,
        lists or tensors.
        """
        import torch

        if LATENTS in batch:
            values, is_latent = batch[LATENTS], True
        elif AUDIO in batch:
            values, is_latent = batch[AUDIO], False
        else:
            raise ValueError(f"batch has neither an '{AUDIO}' nor a '{LATENTS}' column; columns: {sorted(batch)}")
        missing = [k for k in (PADDING_MASK, PROMPT, SECONDS_START, SECONDS_TOTAL) if k not in batch]
        if missing:
            raise ValueError(f"batch lacks columns {missing}; columns: {sorted(batch)}")
        return cls(
            audio=_tensor(values, torch.float32),
            padding_mask=_tensor(batch[PADDING_MASK], torch.bool),
            prompts=[str(p) for p in batch[PROMPT]],
            seconds_start=_tensor(batch[SECONDS_START], torch.long),
            seconds_total=_tensor(batch[SECONDS_TOTAL], torch.long),
            is_latent=is_latent,
            paths=[str(p) for p in batch[PATH]] if PATH in batch else [],
        )

    def to_numpy_dict(self) -> dict[str, np.ndarray]:
        """The inverse of :meth:`from_numpy_dict` (CPU numpy columns)."""
        out = {
            LATENTS if self.is_latent else AUDIO: self.audio.detach().cpu().numpy(),
            PADDING_MASK: self.padding_mask.cpu().numpy(),
            PROMPT: np.array(self.prompts, dtype=object),
            SECONDS_START: self.seconds_start.cpu().numpy(),
            SECONDS_TOTAL: self.seconds_total.cpu().numpy(),
        }
        if self.paths:
            out[PATH] = np.array(self.paths, dtype=object)
        return out


def _tensor(values: Any, dtype: torch.dtype) -> torch.Tensor:
    import torch

    if isinstance(values, torch.Tensor):
        return values.to(dtype)
    array = np.asarray(values)
    if array.dtype == object:  # Ray Data gives ragged or boxed columns as object arrays
        array = np.stack([np.asarray(v) for v in array])
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # Ray's zero-copy blocks are read-only; torch wants to own writable memory
        array = array.copy()
    return torch.from_numpy(array).to(dtype)
