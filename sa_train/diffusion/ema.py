"""Exponential moving average of a model's weights, kept in fp32 beside the model.

The EMA knows nothing about distribution. :func:`ema_update_` is the whole arithmetic, one fused
call over lists of tensors; :class:`EMA` applies it to an ordinary ``nn.Module`` (one process), and
the trainer applies it to each rank's own partition of DeepSpeed's fp32 master weights
(:mod:`sa_train.training.sharded_ema`), so no rank ever gathers the model to average it.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)


def check_ema_settings(decay: float, start_step: int) -> None:
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay={decay} must be in [0, 1] (config key training.ema.decay)")
    if start_step < 0:
        raise ValueError(f"EMA start_step={start_step} must be >= 0 (config key training.ema.start_step)")


def decay_at(decay: float, start_step: int, step: int) -> float:
    """The decay applied after optimizer step ``step``: 0 (a copy) before ``start_step``."""
    return decay if step >= start_step else 0.0


@torch.no_grad()
def ema_update_(shadows: list[torch.Tensor], currents: list[torch.Tensor], decay: float) -> None:
    """``shadow = decay * shadow + (1 - decay) * current`` in place, for every pair; one fused
    foreach call (per device and dtype) instead of a kernel per tensor. Non-float tensors are copied."""
    floats = [(s, c) for s, c in zip(shadows, currents) if s.is_floating_point()]
    for shadow, current in zip(shadows, currents):
        if not shadow.is_floating_point():
            shadow.copy_(current)
    if not floats:
        return
    shadow_list = [s for s, _ in floats]
    current_list = [c if c.dtype == s.dtype and c.device == s.device else c.to(device=s.device, dtype=s.dtype)
                    for s, c in floats]
    if decay == 0.0:
        torch._foreach_copy_(shadow_list, current_list)
    else:
        torch._foreach_lerp_(shadow_list, current_list, 1.0 - decay)


class EMA:
    """Shadow copy ``ema = decay * ema + (1 - decay) * current`` of a model's weights.

    Tracked: every trainable parameter (``requires_grad`` at construction; frozen parts such as a
    text encoder are not duplicated) and every buffer. Floating-point tensors are averaged in fp32;
    integer buffers (e.g. step counters) are copied. Before ``start_step`` each update copies the
    weights, so the average starts from the trained model rather than from the initialisation.

    Args:
        model: the module whose weights are averaged (names as in ``named_parameters``).
        decay: in [0, 1]; 0 copies on every update, 1 freezes the shadow.
        start_step: first optimizer step that averages.
        device: where the shadow lives (default: beside each parameter); e.g. "cpu" to save GPU memory.
    """

    def __init__(self, model: nn.Module, decay: float, start_step: int = 0, device: torch.device | str | None = None):
        check_ema_settings(decay, start_step)
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.device = torch.device(device) if device is not None else None
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, tensor in self._tracked(model, names=None):
                self.shadow[name] = self._to_shadow(tensor)
        if not self.shadow:
            raise ValueError(f"{type(model).__name__} has no trainable parameters or buffers for the EMA to track")

    def _to_shadow(self, tensor: torch.Tensor) -> torch.Tensor:
        dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
        return tensor.detach().to(device=self.device or tensor.device, dtype=dtype, copy=True)

    def _tracked(self, model: nn.Module, names: set[str] | None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) of the model's tracked tensors; with ``names``, exactly those, else an error."""
        found: dict[str, torch.Tensor] = {}
        for name, param in model.named_parameters():
            if (names is None and param.requires_grad) or (names is not None and name in names):
                found[name] = param
        # Only persistent buffers: non-persistent ones are not in state_dict, so an EMA export of
        # them could not be loaded back into the model.
        persistent = set(model.state_dict().keys())
        for name, buf in model.named_buffers():
            if name in persistent and (names is None or name in names):
                found[name] = buf
        if names is not None and set(found) != names:
            missing = sorted(names - set(found))
            raise ValueError(
                f"model lacks {len(missing)} tensors the EMA tracks, e.g. {missing[:5]}; "
                "pass the same (unwrapped) module the EMA was built from"
            )
        yield from found.items()

    def _check_shapes(self, name: str, tensor: torch.Tensor) -> None:
        if tensor.shape != self.shadow[name].shape:
            raise ValueError(
                f"EMA tensor {name!r} has shape {tuple(self.shadow[name].shape)} but the model's has "
                f"{tuple(tensor.shape)}; under ZeRO-3 pass the gathered full parameters"
            )

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the model's current weights into the shadow after optimizer step ``step``."""
        shadows, currents = [], []
        for name, tensor in self._tracked(model, set(self.shadow)):
            self._check_shapes(name, tensor)
            shadows.append(self.shadow[name])
            currents.append(tensor.detach())
        ema_update_(shadows, currents, decay_at(self.decay, self.start_step, step))
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the model's tracked weights with the averaged ones (cast to the model's dtype)."""
        for name, tensor in self._tracked(model, set(self.shadow)):
            self._check_shapes(name, tensor)
            tensor.copy_(self.shadow[name].to(device=tensor.device, dtype=tensor.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "start_step": self.start_step,
            "num_updates": self.num_updates,
            "shadow": {name: t.clone() for name, t in self.shadow.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; every tracked tensor must be present (no partial loads)."""
        shadow = state.get("shadow")
        if not isinstance(shadow, dict):
            raise ValueError("EMA state has no 'shadow' dict; was it saved by EMA.state_dict()?")
        missing, unexpected = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not match the model: missing {missing[:5]} ({len(missing)}), "
                f"unexpected {unexpected[:5]} ({len(unexpected)}); was it saved from a different model config?"
            )
        for name, saved in shadow.items():
            self._check_shapes(name, saved)
            self.shadow[name].copy_(saved.to(self.shadow[name].device, self.shadow[name].dtype))
        if state.get("decay", self.decay) != self.decay or state.get("start_step", self.start_step) != self.start_step:
            logger.info(
                "EMA settings changed on resume: decay %s -> %s, start_step %s -> %s (keeping the new ones)",
                state.get("decay"), self.decay, state.get("start_step"), self.start_step,
            )
        self.num_updates = int(state.get("num_updates", 0))
