"""The EMA of a DeepSpeed engine's weights, each rank averaging its own fp32 master partition.

Each rank keeps ``ema = decay * ema + (1 - decay) * master`` for the fp32 master weights it owns
(:mod:`sa_train.training.master_weights`), beside them (on the device, or on the CPU where the
optimizer is offloaded), updated with one fused foreach call and no communication. Under ZeRO-3
nothing is gathered per step. The full EMA exists only when asked for (:meth:`ShardedEMA.full_weights`:
checkpoint, samples), and then only on rank 0. Persistent buffers (none in sa_train's models today)
are not partitioned by DeepSpeed: rank 0 averages them from the module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open

from sa_train.diffusion.ema import check_ema_settings, decay_at, ema_update_
from sa_train.training.master_weights import MasterPartitions, master_partitions


def persistent_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    keys = set(module.state_dict().keys())
    return {name: buf for name, buf in module.named_buffers() if name in keys}


class ShardedEMA:
    """EMA of an engine's trainable weights (+ persistent buffers); every rank builds one.

    Args:
        engine: a DeepSpeed engine, after ``deepspeed.initialize``.
        decay: in [0, 1]. start_step: before it, each update copies the weights.
    """

    def __init__(self, engine, decay: float, start_step: int = 0):
        check_ema_settings(decay, start_step)
        self.decay, self.start_step = float(decay), int(start_step)
        self.engine = engine
        self.partitions: MasterPartitions = master_partitions(engine)
        self.rank = self.partitions.rank
        with torch.no_grad():
            self.shadow = [t.detach().float().clone() for t in self.partitions.local()]
            self.buffers = {n: b.detach().clone().float() if b.is_floating_point() else b.detach().clone()
                            for n, b in persistent_buffers(engine.module).items()} if self.rank == 0 else {}
        self.num_updates = 0

    @property
    def names(self) -> list[str]:
        """Names of the tensors in the full EMA, as in the module's state dict."""
        return self.partitions.names + sorted(persistent_buffers(self.engine.module))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold this rank's master weights after optimizer step ``step`` into its EMA (no communication)."""
        decay = decay_at(self.decay, self.start_step, step)
        ema_update_(self.shadow, self.partitions.local(), decay)
        if self.buffers:
            current = persistent_buffers(self.engine.module)
            ema_update_(list(self.buffers.values()), [current[n] for n in self.buffers], decay)
        self.num_updates += 1

    def full_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """The whole EMA as fp32 CPU tensors by name on rank 0, None elsewhere (collective: every rank calls it)."""
        full = self.partitions.gather(self.shadow)
        if full is None:
            return None
        full.update({n: b.cpu().clone() for n, b in self.buffers.items()})
        return full

    def load_file(self, path: Path) -> None:
        """Restore this rank's part from a full EMA file (``ema.safetensors`` of a checkpoint); every
        tensor of the model must be there and nothing else (no partial loads)."""
        with safe_open(str(path), framework="pt") as f:
            saved = set(f.keys())
            expected = set(self.names)
            if saved != expected:
                missing, unexpected = sorted(expected - saved), sorted(saved - expected)
                raise ValueError(
                    f"{path} does not match the model: missing {missing[:5]} ({len(missing)}), unexpected "
                    f"{unexpected[:5]} ({len(unexpected)}); was it saved from a different model config?"
                )
            with torch.no_grad():
                self.shadow = self.partitions.local_slice(f.get_tensor, self.shadow)
                for name, buf in self.buffers.items():
                    buf.copy_(f.get_tensor(name))
