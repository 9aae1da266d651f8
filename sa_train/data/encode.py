"""Pre-encoding audio into latent shards (the job behind `sa-train encode`).

Every file is encoded whole (resampled and brought to ``data.channels``, no augmentation), so
training can draw a new crop anywhere in it each epoch (:mod:`sa_train.data.latents`). A file
shorter than ``data.encode_window_samples`` (default ``data.window_samples``) is first padded with
silence to that length, exactly as the audio path pads a short window, so its padded frames are
the encoder's view of silence. Long files go through the encoder in chunks of
``data.encode_chunk_samples`` with context on both sides (:mod:`sa_train.data.encode_chunks`),
which bounds memory and matches a whole-file encode within
:data:`~sa_train.data.encode_chunks.CHUNKED_ENCODE_TOLERANCE`.

Shard ``k`` holds the files ``k * shard_size .. (k + 1) * shard_size - 1`` of the sources (bad
ones left out and counted), so re-running the job finds the same shards: a shard that exists is
complete (it is written to a temporary name and renamed) and is skipped. The encoder is given as
a factory ``encoder_factory(device) -> encode_fn`` so each Ray actor builds its own model on its
own device:

    encode_fn(audio: (batch, channels, samples) float32 tensor on ``device``)
        -> latents: (batch, latent_channels, samples / downsampling) tensor
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from sa_train.config.fields import ConfigError
from sa_train.data.bad_files import BadFileCounter
from sa_train.data.batch import LATENTS, PADDING_MASK, PATH, PROMPT, SECONDS_TOTAL
from sa_train.data.config import DataConfig
from sa_train.data.decode import BadFile, Example, _Bad, _crop, open_soundfile
from sa_train.data.encode_chunks import DEFAULT_CONTEXT_FRAMES, EncodeFn, encode_waveforms
from sa_train.data.latents import (
    FILE_INDEX,
    FORMAT_VERSION,
    FRAME_OFFSETS,
    INDEX_NAME,
    METADATA,
    SAMPLES,
    LatentFormatError,
    ShardStore,
    read_shard_metadata,
    read_shard_metadatas,
    shard_metadata,
    shard_name,
)
from sa_train.data.manifest import CatalogColumn, ManifestCatalog
from sa_train.data.pipeline import load_files, resolve_table

logger = logging.getLogger(__name__)

EncoderFactory = Callable[[str], EncodeFn]
Row = Union[Mapping[str, Any], BadFile]


@dataclass
class EncodeSummary:
    """What an encode run did: shards written and skipped, examples written, bad files."""

    shards_written: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)
    examples: int = 0
    bad_files: BadFileCounter = field(default_factory=BadFileCounter)


def _frames_of(key: str, samples: int, downsampling: int) -> int:
    if samples % downsampling:
        raise ConfigError(f"{key}={samples} is not a multiple of the autoencoder downsampling {downsampling}")
    return samples // downsampling


def encode_window(cfg: DataConfig, downsampling: int) -> int:
    """Samples that shorter files are padded to before encoding; checks it is whole latent frames."""
    key = "data.encode_window_samples" if cfg.encode_window_samples else "data.window_samples"
    window = cfg.encode_window_samples or cfg.window_samples
    _frames_of(key, window, downsampling)
    return window


def encode_chunk_frames(cfg: DataConfig, downsampling: int) -> int:
    """Latent frames the encoder turns out per chunk of a long file (0: whole files)."""
    return _frames_of("data.encode_chunk_samples", cfg.encode_chunk_samples, downsampling)


def read_whole_file(path: str, cfg: DataConfig, min_samples: int = 0) -> Union[Example, BadFile]:
    """A whole file at ``cfg.sample_rate`` and ``cfg.channels`` (no augmentation), padded with
    silence to ``min_samples``; bad input comes back as a :class:`BadFile`.

    Uses the audio path's own cropping code with a window as long as the file, so resampling,
    clipping, the mask and the bad-file rules are the same.
    """
    try:
        with open_soundfile(path) as sound:
            samples = math.ceil(sound.frames * cfg.sample_rate / sound.samplerate)
            window = max(samples, min_samples)
            return _crop(sound, path, cfg, np.random.default_rng(0), window, "start", False, None)
    except _Bad as bad:
        return BadFile(path, bad.reason, bad.detail)


class DecodedRows(Sequence):
    """Files decoded on access into encode rows: each whole, padded with silence to ``window``."""

    def __init__(self, paths: Sequence[str], prompts: Sequence[str], cfg: DataConfig, window: int) -> None:
        # Sequences are kept as given: a large manifest's columns fetch their blocks on access.
        self.paths = paths if isinstance(paths, CatalogColumn) else list(paths)
        self.prompts = prompts if isinstance(prompts, CatalogColumn) else list(prompts)
        self.cfg, self.window = cfg, window

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        result = read_whole_file(self.paths[index], self.cfg, self.window)
        if isinstance(result, BadFile):
            return result
        return {
            "audio": result.audio,
            PADDING_MASK: result.padding_mask,
            PROMPT: self.prompts[index],
            SECONDS_TOTAL: result.seconds_total,
            PATH: result.path,
        }


def latent_mask(mask: np.ndarray, downsampling: int) -> np.ndarray:
    """(samples,) bool -> (samples / downsampling,) bool: a frame is real if any of its samples is."""
    frames = mask.shape[-1] // downsampling
    return mask[..., : frames * downsampling].reshape(*mask.shape[:-1], frames, downsampling).any(-1)


def _whole_frames(audio: np.ndarray, downsampling: int) -> np.ndarray:
    """(channels, samples) padded with zeros to a multiple of ``downsampling``."""
    extra = -audio.shape[-1] % downsampling
    return np.pad(audio, ((0, 0), (0, extra))) if extra else audio


def shard_bytes(rows: list[Mapping[str, Any]], latents: list[np.ndarray], identity: str, downsampling: int,
                sample_rate: int) -> bytes:
    """The npz bytes of one shard (see :mod:`sa_train.data.latents` for the layout).

    ``rows``: per example ``prompt``, ``seconds_total``, ``path``, ``samples`` (real audio at
    ``sample_rate``) and ``file_index``; ``latents``: per example ``(latent_channels, frames)``.
    """
    lengths = [lat.shape[-1] for lat in latents]
    channels = latents[0].shape[0] if latents else None
    meta = shard_metadata(identity, downsampling, sample_rate, channels, sum(lengths), len(rows),
                          min(lengths) if lengths else None)
    arrays = {
        LATENTS: np.concatenate(latents, axis=-1) if latents else np.zeros((0, 0), np.float16),
        FRAME_OFFSETS: np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
        SAMPLES: np.array([r[SAMPLES] for r in rows], dtype=np.int64),
        FILE_INDEX: np.array([r[FILE_INDEX] for r in rows], dtype=np.int64),
        PROMPT: np.array([r[PROMPT] for r in rows], dtype=str),
        SECONDS_TOTAL: np.array([r[SECONDS_TOTAL] for r in rows], dtype=np.int64),
        PATH: np.array([r[PATH] for r in rows], dtype=str),
        METADATA: np.array(json.dumps(meta, sort_keys=True)),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def check_existing_shard(store: ShardStore, name: str, identity: str) -> None:
    """Refuse to skip (and so to mix in) a shard of another format version or autoencoder."""
    meta = read_shard_metadata(store, name)
    if meta.get("format_version") != FORMAT_VERSION or meta.get("autoencoder_identity") != identity:
        raise LatentFormatError(
            f"{store.location}/{name} exists but was written by another autoencoder or format version "
            f"(version {meta.get('format_version')}, this sa_train writes {FORMAT_VERSION}); encode into a new "
            f"folder (--out) instead of mixing shards"
        )


def encode_to_shards(
    dataset_rows: Sequence[Row],
    encode_fn: EncodeFn,
    identity: str,
    out_dir: str,
    shard_size: int,
    *,
    downsampling: int,
    sample_rate: int,
    device: str = "cpu",
    batch_size: int = 8,
    shards: Optional[Sequence[int]] = None,
    chunk_frames: int = 0,
    context_frames: int = DEFAULT_CONTEXT_FRAMES,
) -> EncodeSummary:
    """Encode rows into shards of ``shard_size`` rows each, skipping shards already written.

    Args:
        dataset_rows: a sequence (indexed one row at a time, so a lazy one holds one decoded file
            at a time) of rows ``audio: (channels, samples)`` (a whole file, padded as wanted),
            ``padding_mask: (samples,)`` (True on a prefix: the real audio), ``prompt``,
            ``seconds_total``, ``path``, or :class:`BadFile` entries, counted and left out.
        encode_fn: ``(batch, channels, samples)`` on ``device`` -> ``(batch, latent_channels, frames)``.
        identity: the autoencoder identity stored in every shard.
        out_dir: local folder or URI of the shards.
        shards: only these shard indices (default: all).
        chunk_frames, context_frames: chunked encoding of long rows (see
            :func:`~sa_train.data.encode_chunks.encode_waveforms`); 0 frames: each row in one pass.
    """
    store = ShardStore(out_dir)
    summary = EncodeSummary()
    count = math.ceil(len(dataset_rows) / shard_size)
    for k in shards if shards is not None else range(count):
        name = shard_name(k)
        if store.exists(name):
            check_existing_shard(store, name, identity)
            summary.shards_skipped.append(k)
            continue
        kept: list[dict[str, Any]] = []
        indices = range(k * shard_size, min((k + 1) * shard_size, len(dataset_rows)))
        waveforms = _good_waveforms(dataset_rows, indices, kept, summary.bad_files, downsampling)
        latents = []
        for position, lat in enumerate(encode_waveforms(
            waveforms, encode_fn, downsampling=downsampling, chunk_frames=chunk_frames,
            context_frames=context_frames, batch_size=batch_size, device=device,
        )):
            if not np.isfinite(lat).all():
                raise ValueError(f"the encoder produced NaN or Inf latents for {kept[position][PATH]} (shard {k}); "
                                 "check the autoencoder weights")
            latents.append(lat.astype(np.float16))
        store.write_atomic(name, shard_bytes(kept, latents, identity, downsampling, sample_rate))
        summary.shards_written.append(k)
        summary.examples += len(kept)
        logger.info("wrote %s/%s (%d examples, %d latent frames)", out_dir, name, len(kept),
                    sum(lat.shape[-1] for lat in latents))
    return summary


def _good_waveforms(rows: Sequence[Row], indices: range, kept: list, bad_files: BadFileCounter,
                    downsampling: int) -> Iterator[np.ndarray]:
    """The audio of the good rows among ``indices``, padded to whole frames; appends each one's
    metadata to ``kept`` and counts the bad ones."""
    for index in indices:
        row = rows[index]
        if isinstance(row, BadFile):
            bad_files.add_bad(row)
            continue
        bad_files.add_good()
        kept.append({
            PROMPT: row[PROMPT], SECONDS_TOTAL: row[SECONDS_TOTAL], PATH: row[PATH],
            SAMPLES: int(np.count_nonzero(row[PADDING_MASK])), FILE_INDEX: index,
        })
        yield _whole_frames(row["audio"], downsampling)


class _ShardEncoder:
    """Ray Data actor: builds the encoder once on its device, then encodes whole shards."""

    def __init__(self, table, cfg, encoder_factory, identity, out, downsampling, shard_size, batch_size,
                 context_frames, threads=None):
        import ray
        import torch

        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        if threads:  # this actor's share of the node's cores, no more than the cores it can run on
            torch.set_num_threads(max(1, min(threads, len(os.sched_getaffinity(0)))))
        self.encode_fn = encoder_factory(self.device)
        table = resolve_table(table)
        if isinstance(table, ManifestCatalog):  # block references: each actor fetches its shards' blocks
            table = {"paths": CatalogColumn(table, "path"), "prompts": CatalogColumn(table, "prompt")}
        self.rows = DecodedRows(table["paths"], table["prompts"], cfg, encode_window(cfg, downsampling))
        self.kwargs = dict(
            identity=identity, out_dir=out, shard_size=shard_size, downsampling=downsampling,
            sample_rate=cfg.sample_rate, device=self.device, batch_size=batch_size,
            chunk_frames=encode_chunk_frames(cfg, downsampling), context_frames=context_frames,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for k in batch["shard"]:
            summary = encode_to_shards(self.rows, self.encode_fn, shards=[int(k)], **self.kwargs)
            bad = summary.bad_files
            results.append(json.dumps({
                "written": summary.shards_written, "skipped": summary.shards_skipped, "examples": summary.examples,
                "seen": bad.seen, "counts": dict(bad.counts),
                "bad": [[b.path, b.reason, b.detail] for kept in bad.examples.values() for b in kept],
            }))
        return {"result": np.array(results, dtype=object)}


def encode_actors(pending: int, shard_size: int, num_actors: Optional[int] = None
                  ) -> tuple[int, Optional[int], dict[str, int]]:
    """How many encode actors to start for ``pending`` shards of ``shard_size`` files, the torch
    threads of each (None on GPUs) and the Ray resources each reserves.

    A shard is one actor's work, so there are never more actors than pending shards. With GPUs: one
    actor per GPU (or ``num_actors``); fewer shards than GPUs leave GPUs idle, which is logged with
    the way out. On CPUs: one actor per CPU of the cluster (or ``num_actors``); when there are fewer
    shards than a node has cores, each actor reserves a share of the node's cores and runs that
    many torch threads instead of leaving the cores idle.
    """
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        size = min(num_actors or gpus, pending)
        if size < gpus:
            logger.warning("encode: %d shard(s) to write for %d GPUs leave %d GPU(s) idle; a smaller "
                           "data.latent_shard_size (now %d files) spreads the files over more shards",
                           pending, gpus, gpus - size, shard_size)
        return size, None, {"num_gpus": 1}
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    node_cpus = max([int(node["Resources"].get("CPU", 0)) for node in nodes] or [1])
    if len(nodes) == 1:  # this machine (a local instance may have more logical CPUs than cores)
        node_cpus = min(node_cpus, len(os.sched_getaffinity(0)))
    size = max(1, min(num_actors or int(ray.cluster_resources().get("CPU", 1)), pending))
    threads = max(1, node_cpus // size)
    return size, threads, {"num_cpus": threads}


def run_encode(
    cfg: DataConfig,
    encoder_factory: EncoderFactory,
    identity: str,
    out: str,
    downsampling: int,
    *,
    batch_size: int = 8,
    num_actors: Optional[int] = None,
    context_frames: Optional[int] = None,
) -> EncodeSummary:
    """Encode ``cfg.sources`` into latent shards under ``out`` with a Ray Data actor pool.

    One actor per GPU when the cluster has GPUs (each builds ``encoder_factory('cuda')``), else
    one per CPU (``encoder_factory('cpu')``), never more than the shards to write; fewer shards
    than cores get several torch threads each (:func:`encode_actors`). Every file is encoded
    whole, long ones in chunks of ``data.encode_chunk_samples`` with ``context_frames`` of context
    on each side (default :data:`~sa_train.data.encode_chunks.DEFAULT_CONTEXT_FRAMES`; derive it
    from the autoencoder with :func:`~sa_train.data.encode_chunks.context_frames_for`). Shards
    already in ``out`` are checked (format version, autoencoder) and skipped. Writes ``index.json``
    at the end; raises BadDataError above ``data.max_bad_fraction``.
    """
    import ray
    import ray.data

    from sa_train.ray_session import ensure_ray

    window = encode_window(cfg, downsampling)
    chunk = encode_chunk_frames(cfg, downsampling)
    context = DEFAULT_CONTEXT_FRAMES if context_frames is None else context_frames
    records = load_files(cfg)  # a large manifest: block references, read through Ray Data
    store = ShardStore(out)
    count = math.ceil(len(records) / cfg.latent_shard_size)
    existing = set(store.list_shards())  # one listing, not a request per shard
    done = {k for k in range(count) if shard_name(k) in existing}
    for k in sorted(done):
        check_existing_shard(store, shard_name(k), identity)
    pending = [k for k in range(count) if k not in done]
    summary = EncodeSummary(shards_skipped=sorted(done))
    logger.info("encode: %d files, %d shards (%d already written); whole files, shorter ones padded to %d samples, "
                "encoded in chunks of %s frames with %d frames of context", len(records), count,
                count - len(pending), window, chunk or "all", context)
    if pending:
        ensure_ray()
        size, threads, resources = encode_actors(len(pending), cfg.latent_shard_size, num_actors)
        if isinstance(records, ManifestCatalog):
            table = records
        else:
            table = ray.put({"paths": [r.path for r in records], "prompts": [r.prompt for r in records]})
        ds = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(
            _ShardEncoder,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=size),
            fn_constructor_kwargs=dict(
                table=table, cfg=cfg, encoder_factory=encoder_factory, identity=identity, out=out,
                downsampling=downsampling, shard_size=cfg.latent_shard_size, batch_size=batch_size,
                context_frames=context, threads=threads,
            ),
            **resources,
        )
        for row in ds.take_all():
            result = json.loads(row["result"])
            summary.shards_written += result["written"]
            summary.shards_skipped += result["skipped"]
            summary.examples += result["examples"]
            part = BadFileCounter(seen=result["seen"])
            part.counts.update(result["counts"])
            for path, reason, detail in result["bad"]:
                part.examples.setdefault(reason, []).append(BadFile(path, reason, detail))
            summary.bad_files.merge(part)
    names = [shard_name(k) for k in range(count)]
    metas = read_shard_metadatas(store, names)
    index = {
        "format_version": FORMAT_VERSION, "autoencoder_identity": identity, "downsampling": downsampling,
        "sample_rate": cfg.sample_rate, "encode_window_samples": window, "encode_chunk_frames": chunk,
        "context_frames": context, "files": len(records), "frames": sum(m["frames"] for m in metas),
        "shards": names, "examples": sum(m["examples"] for m in metas),
        "bad_files_this_run": dict(summary.bad_files.counts),
    }
    store.write_atomic(INDEX_NAME, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    summary.bad_files.check(cfg.max_bad_fraction)
    return summary
