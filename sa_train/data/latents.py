"""The latent shard format, and diffusion training input read from it.

A latent folder (local path or URI) holds ``shard-000000.npz``, ``shard-000001.npz``, ... and,
once an encode run finished, ``index.json`` with its summary. Each shard is an uncompressed npz
(written by :mod:`sa_train.data.encode`) of ``N`` whole files, ``F`` latent frames in all:

    latents         (latent_channels, F) float16   every file's latents, one after the other
    frame_offsets   (N + 1,) int64     file i: latents[:, frame_offsets[i] : frame_offsets[i + 1]]
    samples         (N,) int64         real audio of file i at the shard's sample rate; frames past
                                       ceil(samples / downsampling) encode silence padding
    file_index      (N,) int64         the file's position in the encoded sources (seeds its crops)
    prompt          (N,) str
    seconds_total   (N,) int64         ceil(whole source file / its sample rate)
    path            (N,) str
    metadata        () str             JSON, see :func:`shard_metadata`

Each file's latents start at its first sample and cover it whole (a file shorter than the encode
window is padded with silence to it first). Format version 1 held one fixed window per file and
is refused: re-encode.

``metadata`` carries :data:`FORMAT_VERSION` and the autoencoder identity (a hash of its weights
and config, :func:`autoencoder_identity`). Training refuses shards whose version or identity
differ from what it expects, because latents of another autoencoder decode to noise.

Training crops mirror the audio path (:func:`sa_train.data.decode.read_window`): for each file
and epoch the same draw (``example_rng(seed, epoch, file_index)``) picks a sample offset uniform
in ``[0, samples - window]`` (0 for a shorter file, or with ``data.crop=start``), snapped down to
the frame grid; ``seconds_start = floor(frame * downsampling / sample_rate)``; a frame is real
(padding mask True) when any of its samples is real audio.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from sa_train.data.batch import LATENTS, PADDING_MASK, PATH, PROMPT, SECONDS_START, SECONDS_TOTAL, AudioBatch
from sa_train.data.config import DataConfig
from sa_train.data.pipeline import MAX_STREAM_BLOCKS, epoch_order, example_rng

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
# Examples per Ray Data block of the latent stream. A task reads a whole shard (256 files by
# default) but emits it in blocks this small, so streaming_split deals one shard's examples out to
# many ranks: every rank has data once the first few shards are read, and a rank's batches come from
# many shards, instead of one rank training on one shard for 256 / micro-batch steps.
LATENT_BLOCK_EXAMPLES = 16
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".npz"
INDEX_NAME = "index.json"
FRAME_OFFSETS = "frame_offsets"
SAMPLES = "samples"
FILE_INDEX = "file_index"
METADATA = "metadata"


class LatentFormatError(ValueError):
    """Shards that cannot be used: wrong format version, another autoencoder, or inconsistent."""


def shard_name(index: int) -> str:
    return f"{SHARD_PREFIX}{index:06d}{SHARD_SUFFIX}"


def autoencoder_identity(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """A hex SHA-256 of an autoencoder's weights (names, dtypes, shapes, bytes) and its config."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(state_dict):
        dtype, shape, data = _tensor_bytes(state_dict[name])
        digest.update(f"{name}:{dtype}:{shape}".encode())
        digest.update(data)
    return digest.hexdigest()


def _tensor_bytes(value: Any) -> tuple[str, tuple, bytes]:
    if hasattr(value, "detach"):  # a torch tensor; viewed as bytes so bfloat16 works too
        import torch

        flat = value.detach().cpu().contiguous().flatten()
        return str(value.dtype), tuple(value.shape), flat.view(torch.uint8).numpy().tobytes()
    array = np.ascontiguousarray(value)
    return str(array.dtype), array.shape, array.tobytes()


def shard_metadata(
    identity: str, downsampling: int, sample_rate: int, latent_channels: Optional[int], frames: int, examples: int,
    min_frames: Optional[int],
) -> dict[str, Any]:
    """The metadata JSON stored in every shard: ``frames`` in all, ``min_frames`` of its
    shortest file (``latent_channels`` and ``min_frames`` are None in a shard of no files)."""
    return {
        "format_version": FORMAT_VERSION,
        "autoencoder_identity": identity,
        "downsampling": downsampling,
        "sample_rate": sample_rate,
        "latent_channels": latent_channels,
        "frames": frames,
        "min_frames": min_frames,
        "examples": examples,
    }


# ---------------------------------------------------------------------------------------------
# Storage: a local folder or any pyarrow/fsspec URI


class ShardStore:
    """Reading and atomically writing the files of one latent folder."""

    def __init__(self, location: str) -> None:
        from sa_train.data.sources import _filesystem, is_uri

        self.location = location
        self.remote = is_uri(location)
        self.fs, self.root, _ = _filesystem(location)

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name) if self.remote else os.path.join(self.root, name)

    def exists(self, name: str) -> bool:
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self._path(name)).type == pafs.FileType.File

    def list_shards(self) -> list[str]:
        from pyarrow import fs as pafs

        if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        names = [posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File]
        return sorted(n for n in names if n.startswith(SHARD_PREFIX) and n.endswith(SHARD_SUFFIX))

    def write_atomic(self, name: str, data: bytes) -> None:
        """Write ``name`` so that it exists only once complete: a local temp file renamed into
        place, or a single object upload (object stores publish an object only when complete)."""
        if self.remote:
            self.fs.create_dir(self.root, recursive=True)  # a no-op marker on object stores
            with self.fs.open_output_stream(self._path(name)) as f:
                f.write(data)
            return
        os.makedirs(self.root, exist_ok=True)
        temp = self._path(f".{name}.tmp-{os.getpid()}")
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self._path(name))

    def read_bytes(self, name: str) -> bytes:
        if not self.remote:
            with open(self._path(name), "rb") as f:
                return f.read()
        with self.fs.open_input_file(self._path(name)) as f:
            return f.read()


def read_shard(store: ShardStore, name: str) -> dict[str, Any]:
    """All arrays of a shard, with ``metadata`` parsed into a dict."""
    with np.load(io.BytesIO(store.read_bytes(name)), allow_pickle=False) as npz:
        shard = {key: npz[key] for key in npz.files}
    shard[METADATA] = json.loads(str(shard[METADATA]))
    return shard


def read_shard_metadata(store: ShardStore, name: str) -> dict[str, Any]:
    """Only a shard's metadata: npz members load lazily and remote files are opened seekable,
    so only the zip directory and the metadata member are read, not the latents."""
    source = store.fs.open_input_file(store._path(name)) if store.remote else store._path(name)
    try:
        with np.load(source, allow_pickle=False) as npz:
            if METADATA not in npz.files:
                raise LatentFormatError(f"{store.location}/{name} has no metadata; it is not an sa_train latent shard")
            return json.loads(str(npz[METADATA]))
    except (OSError, ValueError) as err:
        if isinstance(err, LatentFormatError):
            raise
        raise LatentFormatError(f"{store.location}/{name} is not a readable latent shard ({err})") from err
    finally:
        if store.remote:
            source.close()


def read_shard_metadatas(store: ShardStore, names: list[str]) -> list[dict[str, Any]]:
    """:func:`read_shard_metadata` of every shard; a remote folder's are read 32 at a time (each
    is a few small ranged reads, latency-bound: 3,000 shards in turn take minutes)."""
    if not store.remote or len(names) < 2:
        return [read_shard_metadata(store, name) for name in names]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(lambda name: read_shard_metadata(store, name), names))


def validate_shards(location: str, identity: Optional[str]) -> tuple[list[str], dict[str, Any]]:
    """Check every shard's format version and autoencoder identity; returns (names, metadata).

    The metadata is that of the first shard holding files, with ``min_frames`` over the whole
    folder. ``identity=None`` accepts any autoencoder (inspection tools only).
    """
    store = ShardStore(location)
    names = store.list_shards()
    if not names:
        raise LatentFormatError(
            f"data.latents={location!r} holds no latent shards ({SHARD_PREFIX}*{SHARD_SUFFIX}); run `sa-train encode` first"
        )
    metas = []
    for name, meta in zip(names, read_shard_metadatas(store, names)):
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise LatentFormatError(
                f"latent shard {location}/{name} has format version {version}, this sa_train reads version "
                f"{FORMAT_VERSION} (whole files, cropped anew each epoch; version 1 held only each file's first "
                f"window); re-encode the dataset with `sa-train encode CONFIG --autoencoder DIR --out NEW_FOLDER`"
            )
        found = meta.get("autoencoder_identity")
        if identity is not None and found != identity:
            raise LatentFormatError(
                f"latent shard {location}/{name} was encoded by autoencoder {str(found)[:16]}..., but this run uses "
                f"autoencoder {identity[:16]}...; latents of another autoencoder decode to noise. Re-encode with "
                f"`sa-train encode` using this autoencoder, or set data.latents to shards made by it"
            )
        metas.append((name, meta))
    # A shard whose files were all bad has no latent channels to compare.
    filled = [(name, meta) for name, meta in metas if meta.get("examples")] or metas[:1]
    first, reference = filled[0]
    for name, meta in metas:
        keys = ("downsampling", "sample_rate") + (("latent_channels",) if meta.get("examples") else ())
        differing = [k for k in keys if meta.get(k) != reference.get(k)]
        if differing:
            raise LatentFormatError(
                f"latent shard {location}/{name} differs from {first} in {differing}; the folder mixes two encode runs"
            )
    lengths = [meta["min_frames"] for _, meta in filled if meta.get("min_frames") is not None]
    total = sum(int(meta.get("examples") or 0) for _, meta in metas)
    return names, {**reference, "min_frames": min(lengths) if lengths else None, "total_examples": total}


# ---------------------------------------------------------------------------------------------
# Crops and the training dataset


def crop_frame(samples: int, window_frames: int, downsampling: int, crop: str, rng: np.random.Generator) -> int:
    """First latent frame of a file's training crop.

    The audio path's draw (:func:`sa_train.data.decode.read_window`): a sample offset uniform in
    ``[0, samples - window]`` for ``crop='random'``, 0 for a file no longer than the window or
    ``crop='start'``; snapped down to the frame grid, so the crop stays inside the real audio.
    """
    latest = max(samples - window_frames * downsampling, 0)
    offset = int(rng.integers(0, latest + 1)) if crop == "random" and latest > 0 else 0
    return offset // downsampling


def crop_latents(
    latents: np.ndarray,
    samples: int,
    window_frames: int,
    downsampling: int,
    sample_rate: int,
    crop: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    """A training window of one file's latents.

    Args:
        latents: (channels, frames) of the whole file, ``frames >= window_frames``.
        samples: the file's real audio at ``sample_rate``.
    Returns:
        (latents (channels, window_frames), padding_mask (window_frames,) True where the frame
        holds real audio, seconds_start = floor(frame offset * downsampling / sample_rate)).
    """
    first = crop_frame(samples, window_frames, downsampling, crop, rng)
    window = latents[:, first : first + window_frames]
    assert window.shape[-1] == window_frames, "window_frames_for checks the stored lengths"
    mask = (first + np.arange(window_frames)) * downsampling < samples
    return window, mask, first * downsampling // sample_rate


def crop_shard(
    shard: dict[str, Any], window_frames: int, seed: int, epoch: int, shard_index: int, shuffle: bool = True,
    crop: str = "random", latent_channels: Optional[int] = None,
) -> dict[str, np.ndarray]:
    """Column dict of one shard's examples, shuffled and each given this epoch's crop.

    ``latent_channels`` shapes the columns of a shard without files (default: its metadata's).
    """
    meta = shard[METADATA]
    n = len(shard[PROMPT])
    order = np.random.default_rng([seed, epoch, shard_index]).permutation(n) if shuffle else np.arange(n)
    offsets = shard[FRAME_OFFSETS]
    latents, masks, starts = [], [], []
    for j in order:
        whole = shard[LATENTS][:, offsets[j] : offsets[j + 1]]
        rng = example_rng(seed, epoch, int(shard[FILE_INDEX][j]))
        lat, mask, start = crop_latents(
            whole, int(shard[SAMPLES][j]), window_frames, meta["downsampling"], meta["sample_rate"], crop, rng
        )
        latents.append(lat)
        masks.append(mask)
        starts.append(start)
    channels = latent_channels or meta["latent_channels"] or 0
    return {
        LATENTS: np.stack(latents) if n else np.zeros((0, channels, window_frames), np.float16),
        PADDING_MASK: np.stack(masks) if n else np.zeros((0, window_frames), bool),
        PROMPT: np.array([str(p) for p in shard[PROMPT][order]], dtype=object),
        SECONDS_START: np.array(starts, dtype=np.int64),
        SECONDS_TOTAL: shard[SECONDS_TOTAL][order].astype(np.int64),
        PATH: np.array([str(p) for p in shard[PATH][order]], dtype=object),
    }


def window_frames_for(cfg: DataConfig, meta: Mapping[str, Any], location: str) -> int:
    """Latent frames per training window; checks the shards can serve it."""
    if meta["sample_rate"] != cfg.sample_rate:
        raise LatentFormatError(
            f"latent shards in {location} were encoded at {meta['sample_rate']} Hz but data.sample_rate={cfg.sample_rate}"
        )
    if cfg.window_samples % meta["downsampling"]:
        raise LatentFormatError(
            f"data.window_samples={cfg.window_samples} is not a multiple of the shards' downsampling {meta['downsampling']}"
        )
    frames = cfg.window_samples // meta["downsampling"]
    if meta.get("min_frames") is not None and frames > meta["min_frames"]:
        raise LatentFormatError(
            f"data.window_samples={cfg.window_samples} ({frames} latent frames) is longer than a file encoded in "
            f"{location} ({meta['min_frames']} frames: files shorter than the encode window are padded with silence "
            f"only up to it); re-encode with data.encode_window_samples >= {cfg.window_samples}, or train on a "
            f"shorter window"
        )
    return frames


def resumed_epochs(examples_seen: int, examples_per_epoch: int) -> int:
    """Epochs a resumed latent stream skips: every epoch begun before the restart. The stream goes
    on with the next epoch's shard order and crops (the rest of the interrupted epoch is skipped:
    rows are whole shards, so it cannot resume mid-shard)."""
    if examples_seen <= 0 or examples_per_epoch <= 0:
        return 0
    return -(-examples_seen // examples_per_epoch)


def _load_latent_batch(batch, location, names, window_frames, seed, shuffle, crop="random", latent_channels=None,
                       start_board=None, examples_per_epoch=0):
    from sa_train.data.pipeline import data_start

    store = ShardStore(location)
    skip_rows = resumed_epochs(data_start(start_board), examples_per_epoch) * len(names)
    parts = []
    for row in np.asarray(batch["id"]) + skip_rows:
        epoch, index = divmod(int(row), len(names))
        index = int(epoch_order(len(names), seed, epoch, shuffle)[index])
        shard = read_shard(store, names[index])
        parts.append(crop_shard(shard, window_frames, seed, epoch, index, shuffle, crop, latent_channels))
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def build_latent_dataset(cfg: DataConfig, identity: str, seed: int, *, epochs: int = 1, shuffle: bool = True,
                         start_board: Optional[str] = None, block_examples: int = LATENT_BLOCK_EXAMPLES):
    """A Ray Data dataset of random latent crops from ``cfg.latents``.

    ``start_board``: the run board (:mod:`sa_train.training.run_board`); a resumed run starts at
    the first epoch it has not begun (:func:`resumed_epochs`), so it does not replay its first
    batches.

    Rows: ``latents: (latent_channels, window_samples / downsampling) float16``,
    ``padding_mask: (frames,) bool``, ``prompt``, ``seconds_start`` (of the crop),
    ``seconds_total``, ``path``. Each epoch visits the shards in a new order and draws a new crop
    of every file (``data.crop``), as the audio path does. Each shard leaves its read task in
    blocks of ``block_examples`` (:data:`LATENT_BLOCK_EXAMPLES`), so the ranks share every shard.
    Raises :class:`LatentFormatError` if a shard's version or autoencoder identity differs.
    """
    import ray.data

    from sa_train.ray_session import ensure_ray

    if not cfg.latents:
        raise ValueError("data.latents is not set; point it at the output of `sa-train encode`")
    names, meta = validate_shards(cfg.latents, identity)
    window_frames = window_frames_for(cfg, meta, cfg.latents)
    ensure_ray()
    logger.info("latent dataset: %d shards x %d epochs, %d frames per window, blocks of %d examples", len(names),
                epochs, window_frames, block_examples)
    shards = ray.data.range(len(names) * epochs, override_num_blocks=min(len(names) * epochs, MAX_STREAM_BLOCKS))
    return shards.map_batches(
        _load_latent_batch,
        batch_size=1,
        batch_format="numpy",
        num_cpus=1,
        fn_kwargs={
            "location": cfg.latents,
            "names": names,
            "window_frames": window_frames,
            "seed": seed,
            "shuffle": shuffle,
            "crop": cfg.crop,
            "latent_channels": meta["latent_channels"],
            "start_board": start_board,
            "examples_per_epoch": meta["total_examples"],
        },
    ).repartition(target_num_rows_per_block=block_examples)  # fused into the read task: a split, not a shuffle


def iter_local_latent_batches(
    cfg: DataConfig, identity: str, batch_size: int, seed: int, *, epochs: int = 1, shuffle: bool = True
) -> Iterator[AudioBatch]:
    """:func:`build_latent_dataset`'s stream read in this process (tests, benchmarks)."""
    names, meta = validate_shards(cfg.latents, identity)
    window_frames = window_frames_for(cfg, meta, cfg.latents)
    pending: list[dict[str, np.ndarray]] = []
    count = 0
    for row in range(len(names) * epochs):
        part = _load_latent_batch({"id": [row]}, cfg.latents, names, window_frames, seed, shuffle, cfg.crop,
                                  meta["latent_channels"])
        pending.append(part)
        count += len(part[PROMPT])
        while count >= batch_size:
            merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            yield AudioBatch.from_numpy_dict({k: v[:batch_size] for k, v in merged.items()})
            pending, count = [{k: v[batch_size:] for k, v in merged.items()}], count - batch_size
    if count:
        merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        yield AudioBatch.from_numpy_dict(merged)
