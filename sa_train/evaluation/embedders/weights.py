"""Where the metric models' weights come from, which device they run on, and the input level.

Every real metric model (OpenL3, PaSST) takes ``weights``:

- a local file, or a folder holding the file under its published name (a cluster's shared copy;
  README "Metric model weights"); a missing file is a ValueError naming the expected file;
- ``"random"``: the same module with seeded random weights, for testing the pipeline without a
  download (the numbers mean nothing, and the settings say so, so they never share a cache entry
  with real weights);
- None: the package's own download into the torch hub cache (``$TORCH_HOME/hub/checkpoints``),
  reused from there when already present.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

import numpy as np

logger = logging.getLogger(__name__)

RANDOM = "random"
README_SECTION = 'README.md, "Metric model weights"'


def resolve_device(device: Optional[str]) -> Any:
    """``None`` or ``"auto"``: the GPU when there is one, else the CPU; otherwise ``torch.device(device)``."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}); use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no GPU here; use --device cpu or auto")
    return resolved


def weights_file(weights: Optional[str], file_name: str, url: str, what: str) -> str:
    """The path of the weight file ``file_name`` for ``what`` (e.g. "the openl3 embedder").

    ``weights`` is a file, a folder holding ``file_name``, or None (the torch hub cache, filled from
    ``url`` on first use, as the package itself would).
    """
    hint = f"fetch it once from {url} (see {README_SECTION})"
    if weights is None:
        import torch

        cached = os.path.join(torch.hub.get_dir(), "checkpoints", file_name)
        if not os.path.isfile(cached):
            logger.warning("%s: downloading its weights from %s to %s (pass a local copy to avoid this)",
                           what, url, cached)
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            try:
                torch.hub.download_url_to_file(url, cached, progress=False)
            except Exception as err:  # noqa: BLE001 - any network failure reads the same to the user
                raise ValueError(f"{what}: cannot download its weights ({err}); {hint}, and pass the file or "
                                 "its folder as the weights") from None
        return cached
    path = os.path.expanduser(weights)
    if os.path.isdir(path):
        path = os.path.join(path, file_name)
        if not os.path.isfile(path):
            raise ValueError(f"{what}: the weights folder {weights!r} has no {file_name}; {hint}")
    elif not os.path.isfile(path):
        raise ValueError(f"{what}: weights {weights!r} is neither a file nor a folder holding {file_name}; {hint}, "
                         f"or pass {RANDOM!r} for random weights (pipeline tests only)")
    return path


def load_state_dict_file(path: str, what: str) -> dict:
    """A state dict from a torch checkpoint, tensors only (no pickled code is run)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt, truncated or foreign file
        raise ValueError(f"{what}: cannot read weights file {path!r} as a torch state dict ({err}); "
                         f"fetch it again (see {README_SECTION})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{what}: weights file {path!r} holds a {type(state).__name__}, not a state dict")
    return state


def load_strict(module: Any, state: dict, path: str, what: str) -> None:
    """``module.load_state_dict(state, strict=True)``, a mismatch named as a user error."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip()[:300] + ("..." if len(line.strip()) > 300 else "") for line in str(err).splitlines()]
        raise ValueError(f"{what}: weights file {path!r} does not fit the model (a different variant?): "
                         f"{' '.join(lines[:4])}") from None


def weights_label(weights: Optional[str], path: Optional[str], seed: int) -> str:
    """What the settings (and so the cache key and the report) record about the weights."""
    if weights == RANDOM:
        return f"random(seed={seed})"
    return os.path.basename(path) if path else "unknown"


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block and give the caller's state back after it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def peak_normalize(audio: np.ndarray, dbfs: Optional[float]) -> np.ndarray:
    """Scale so the largest absolute sample is at ``dbfs`` (the paper's metric code: -1 dBFS);
    silence and ``dbfs=None`` are returned unchanged."""
    if dbfs is None:
        return audio
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio
    return (audio * (10.0 ** (dbfs / 20.0) / peak)).astype(np.float32)
