"""Per-rank random streams: every rank draws its own diffusion noise, CFG dropout, VAE posterior
noise and loss-mask dropout, reproducibly, and a resumed run continues each stream where it stopped.

Only the initial weights are identical on all ranks (the task seeds the global RNG with the
config's seed before building the model). Each stream then gets its own ``torch.Generator``
seeded from (seed, rank, stream name), and its state goes into the rank's checkpoint files.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np
import torch

STREAMS = ("noise", "cfg_dropout", "posterior", "loss_mask")


def stream_seed(seed: int, rank: int, stream: str) -> int:
    """A 63-bit seed for (seed, rank, stream): distinct ranks and streams never share a sequence."""
    stream_id = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(rank), stream_id]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


class RandomStreams:
    """Named generators of one rank, on ``device`` (CUDA generators draw on the GPU without a copy)."""

    def __init__(self, seed: int, rank: int, device: torch.device | str = "cpu", streams: Iterable[str] = STREAMS):
        self.seed, self.rank = seed, rank
        self.generators = {
            name: torch.Generator(device=device).manual_seed(stream_seed(seed, rank, name)) for name in streams
        }

    def __getitem__(self, name: str) -> torch.Generator:
        return self.generators[name]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """{"stream.<name>": state} for the rank's checkpoint (safetensors)."""
        return {f"stream.{name}": g.get_state() for name, g in self.generators.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore every stream saved by :meth:`state_tensors`; a stream missing there is an error."""
        for name, generator in self.generators.items():
            key = f"stream.{name}"
            if key not in tensors:
                raise ValueError(
                    f"the checkpoint has no state for the random stream {name!r} of rank {self.rank}; it was "
                    "written by an older sa_train: resume it with that version, or start a new run"
                )
            generator.set_state(tensors[key].cpu())
