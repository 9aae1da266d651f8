"""Training checkpoints: DeepSpeed shards per engine, plus a self-describing training state.

Layout of one checkpoint directory (each rank writes its own files into a local folder and
reports it; Ray Train merges the folders of all ranks into one in storage):

    state.json                 step, samples seen, epoch, MLflow run id, world size, engines, ...
    config.yaml                the resolved experiment config (rank 0)
    model.safetensors          fp32 weights of the trained model, gathered to rank 0 alone (rank 0)
    ema.safetensors            its EMA, full named tensors gathered from every rank's partition
                               (rank 0); on resume each rank reads back only its own partition
    rng/rank<r>.safetensors    torch RNG states of rank r, global and of its own random streams
                               (+ rng/rank<r>.json for python/numpy and small task state)
    <engine>/<tag>/...         DeepSpeed checkpoint of each engine (generator, discriminator, model)

Nothing here is unpickled: the state is JSON and safetensors. A checkpoint is complete only when
every rank's DeepSpeed shard and state.json are present (see :func:`is_complete`); export and
resume never pick an incomplete one.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
EMA_FILE = "ema.safetensors"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainState:
    """Progress that must survive a restart, besides the weights and optimizer states."""

    step: int = 0
    samples_seen: int = 0
    epoch: int = 0
    nonfinite_total: int = 0
    mlflow_run_id: Optional[str] = None
    world_size: int = 1
    zero_stage: int = 0
    stage: str = "diffusion"
    engines: list[str] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)  # steps this run was resumed from
    format_version: int = CHECKPOINT_FORMAT

    def tag(self) -> str:
        return f"step_{self.step:08d}"


def save_rng(directory: Path, rank: int, extra: Optional[dict] = None,
             streams: Optional[dict[str, torch.Tensor]] = None) -> None:
    """This rank's RNG states: global ones, its random streams' (``streams``: name -> state tensor),
    and small per-rank task state in ``extra`` (JSON, e.g. the time sampler)."""
    (directory / "rng").mkdir(parents=True, exist_ok=True)
    tensors = {"torch": torch.get_rng_state(), **(streams or {})}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(directory / "rng" / f"rank{rank}.safetensors"))
    np_state = np.random.get_state()
    py_state = random.getstate()
    (directory / "rng" / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "python": [py_state[0], list(py_state[1]), py_state[2]],
                "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "extra": extra or {},
            }
        )
    )


def load_rng(directory: Path, rank: int) -> dict:
    """Restore this rank's RNG states and return its ``extra`` state ({} when there is none)."""
    path = directory / "rng" / f"rank{rank}.safetensors"
    if not path.exists():
        return {}
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    states = json.loads((directory / "rng" / f"rank{rank}.json").read_text())
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    return states.get("extra", {})


def load_streams(directory: Path, rank: int) -> dict[str, torch.Tensor]:
    """The saved states of this rank's random streams ({} in a checkpoint without any)."""
    path = directory / "rng" / f"rank{rank}.safetensors"
    if not path.exists():
        return {}
    return {k: v for k, v in load_file(str(path)).items() if k.startswith("stream.")}


def write_state(directory: Path, state: TrainState, config_yaml: str, ema: Optional[dict[str, torch.Tensor]]) -> None:
    """Rank 0's part: config, EMA, and state.json (written last)."""
    (directory / CONFIG_FILE).write_text(config_yaml)
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.items()}, str(directory / EMA_FILE))
    (directory / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))


def read_state(directory: Path) -> TrainState:
    return _parse_state(json.loads((Path(directory) / STATE_FILE).read_text()), directory)


def _parse_state(data: dict, source: str | Path) -> TrainState:
    """``source``: the checkpoint folder or state file the data came from, for the message."""
    if data.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{source}: checkpoint format {data.get('format_version')} is not the supported "
            f"format {CHECKPOINT_FORMAT}; export it with the sa_train version that wrote it"
        )
    return TrainState(**data)


def _shard_files(engine_dir: Path, tag: str, world_size: int, zero_stage: int) -> list[Path]:
    root = engine_dir / tag
    if zero_stage == 0:
        return [root / "mp_rank_00_model_states.pt"]
    files = [root / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(world_size)]
    if zero_stage == 3:
        files += [root / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(world_size)]
    else:
        files.append(root / "mp_rank_00_model_states.pt")
    return files


def missing_files(directory: Path) -> list[str]:
    """Files a complete checkpoint would have that this one lacks (empty = complete)."""
    directory = Path(directory)
    if not (directory / STATE_FILE).exists():
        return [STATE_FILE]
    state = read_state(directory)
    missing = [] if (directory / "model.safetensors").exists() else ["model.safetensors"]
    missing += [f"rng/rank{r}.safetensors" for r in range(state.world_size) if not (directory / "rng" / f"rank{r}.safetensors").exists()]
    for engine in state.engines:
        for path in _shard_files(directory / engine, state.tag(), state.world_size, state.zero_stage):
            if not path.exists():
                missing.append(str(path.relative_to(directory)))
    return missing


def is_complete(directory: Path) -> bool:
    return not missing_files(directory)


def find_latest_checkpoint(run_dir: Path) -> Path:
    """The complete checkpoint with the highest step under a run folder (or the folder itself)."""
    run_dir = Path(run_dir)
    if (run_dir / STATE_FILE).exists():
        missing = missing_files(run_dir)
        if missing:
            raise ValueError(f"checkpoint {run_dir} is incomplete (missing {', '.join(missing[:4])}); pick an earlier one")
        return run_dir
    candidates = []
    for state_path in run_dir.rglob(STATE_FILE):
        directory = state_path.parent
        if is_complete(directory):
            candidates.append((read_state(directory).step, directory))
    if not candidates:
        raise ValueError(
            f"no complete checkpoint under {run_dir}; pass a run folder (storage.path/<run name>) "
            "or a checkpoint folder that holds state.json"
        )
    return max(candidates)[1]


def latest_checkpoint_state(run_dir: str) -> Optional[TrainState]:
    """The state of the newest checkpoint a run folder holds (local, or a URI such as s3:// or
    file://), or None when it holds none: what a resubmitted run resumes from.

    Remote folders are listed, not checked for completeness: every checkpoint of a run carries the
    same world size and MLflow run id, which is what the driver reads before any worker starts.
    """
    if "://" not in run_dir:
        if not Path(run_dir).is_dir():
            return None
        try:
            latest = find_latest_checkpoint(Path(run_dir))
        except ValueError:
            return None  # no complete checkpoint: a fresh start
        return read_state(latest)
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir)
    listing = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    states = []
    for info in listing:
        if info.base_name == STATE_FILE and info.type == pyarrow.fs.FileType.File:
            with fs.open_input_stream(info.path) as stream:
                states.append(_parse_state(json.loads(stream.read()), info.path))
    return max(states, key=lambda state: state.step) if states else None
