"""Pre-encoding audio into latent shards (the job behind `sa-train encode`).

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
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from sa_train.config.fields import ConfigError
from sa_train.data.bad_files import BadFileCounter
from sa_train.data.batch import LATENTS, PADDING_MASK, PATH, PROMPT, SECONDS_START, SECONDS_TOTAL
from sa_train.data.config import DataConfig
from sa_train.data.decode import BadFile, read_window
from sa_train.data.latents import (
    FORMAT_VERSION,
    INDEX_NAME,
    METADATA,
    OFFSET_SECONDS,
    LatentFormatError,
    ShardStore,
    read_shard_metadata,
    shard_metadata,
    shard_name,
)
from sa_train.data.pipeline import load_records, resolve_table

logger = logging.getLogger(__name__)

EncodeFn = Callable[[Any], Any]
EncoderFactory = Callable[[str], EncodeFn]
Row = Union[Mapping[str, Any], BadFile]


@dataclass
class EncodeSummary:
    """What an encode run did: shards written and skipped, examples written, bad files."""

    shards_written: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)
    examples: int = 0
    bad_files: BadFileCounter = field(default_factory=BadFileCounter)


def encode_window(cfg: DataConfig, downsampling: int) -> int:
    """Audio samples encoded per file; checks it is a whole number of latent frames."""
    window = cfg.encode_window_samples or cfg.window_samples
    if window % downsampling:
        key = "data.encode_window_samples" if cfg.encode_window_samples else "data.window_samples"
        raise ConfigError(f"{key}={window} is not a multiple of the autoencoder downsampling {downsampling}")
    return window


class DecodedRows(Sequence):
    """Files decoded on access into encode rows: the first ``window`` samples, no augmentation."""

    def __init__(self, paths: Sequence[str], prompts: Sequence[str], cfg: DataConfig, window: int) -> None:
        self.paths, self.prompts, self.cfg, self.window = list(paths), list(prompts), cfg, window

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        result = read_window(
            self.paths[index], self.cfg, np.random.default_rng(0), window_samples=self.window, crop="start", augment=False
        )
        if isinstance(result, BadFile):
            return result
        return {
            "audio": result.audio,
            PADDING_MASK: result.padding_mask,
            PROMPT: self.prompts[index],
            SECONDS_START: result.seconds_start,
            SECONDS_TOTAL: result.seconds_total,
            OFFSET_SECONDS: result.offset / result.source_sample_rate,
            PATH: result.path,
        }


def latent_mask(mask: np.ndarray, downsampling: int) -> np.ndarray:
    """(samples,) bool -> (samples / downsampling,) bool: a frame is real if any of its samples is."""
    frames = mask.shape[-1] // downsampling
    return mask[..., : frames * downsampling].reshape(*mask.shape[:-1], frames, downsampling).any(-1)


def _encode_rows(rows: list[Mapping[str, Any]], encode_fn: EncodeFn, device: str, batch_size: int) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            audio = torch.from_numpy(np.stack([r["audio"] for r in rows[start : start + batch_size]])).to(device)
            latents = encode_fn(audio)
            out.append(latents.detach().float().cpu().numpy())
    return np.concatenate(out)


def shard_bytes(
    rows: list[Mapping[str, Any]], latents: np.ndarray, identity: str, downsampling: int, sample_rate: int
) -> bytes:
    """The npz bytes of one shard (see :mod:`sa_train.data.latents` for the layout)."""
    n, channels, frames = latents.shape
    meta = shard_metadata(identity, downsampling, sample_rate, channels, frames, n)
    arrays = {
        LATENTS: latents.astype(np.float16),
        PADDING_MASK: np.stack([latent_mask(r[PADDING_MASK], downsampling) for r in rows]) if n else np.zeros((0, frames), bool),
        PROMPT: np.array([r[PROMPT] for r in rows], dtype=str),
        SECONDS_START: np.array([r[SECONDS_START] for r in rows], dtype=np.int64),
        SECONDS_TOTAL: np.array([r[SECONDS_TOTAL] for r in rows], dtype=np.int64),
        OFFSET_SECONDS: np.array([r.get(OFFSET_SECONDS, r[SECONDS_START]) for r in rows], dtype=np.float64),
        PATH: np.array([r[PATH] for r in rows], dtype=str),
        METADATA: np.array(json.dumps(meta, sort_keys=True)),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


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
) -> EncodeSummary:
    """Encode rows into shards of ``shard_size`` rows each, skipping shards already written.

    Args:
        dataset_rows: a sequence (sliced per shard, so a lazy one decodes only what is needed) of
            rows ``audio: (channels, samples)``, ``padding_mask: (samples,)``, ``prompt``,
            ``seconds_start``, ``seconds_total``, ``path`` (``offset_seconds`` optional), or
            :class:`BadFile` entries, which are counted and left out.
        encode_fn: ``(batch, channels, samples)`` on ``device`` -> ``(batch, latent_channels, frames)``.
        identity: the autoencoder identity stored in every shard.
        out_dir: local folder or URI of the shards.
        shards: only these shard indices (default: all).
    """
    store = ShardStore(out_dir)
    summary = EncodeSummary()
    count = math.ceil(len(dataset_rows) / shard_size)
    for k in shards if shards is not None else range(count):
        name = shard_name(k)
        if store.exists(name):
            meta = read_shard_metadata(store, name)
            if meta.get("format_version") != FORMAT_VERSION or meta.get("autoencoder_identity") != identity:
                raise LatentFormatError(
                    f"{out_dir}/{name} exists but was written by another autoencoder or format version; "
                    f"encode into a new folder (--out) instead of mixing shards"
                )
            summary.shards_skipped.append(k)
            continue
        rows = []
        for row in dataset_rows[k * shard_size : (k + 1) * shard_size]:
            if isinstance(row, BadFile):
                summary.bad_files.add_bad(row)
            else:
                summary.bad_files.add_good()
                rows.append(row)
        samples = rows[0]["audio"].shape[-1] if rows else 0
        latents = _encode_rows(rows, encode_fn, device, batch_size) if rows else np.zeros((0, 1, 0), np.float32)
        if rows and latents.shape[-1] != samples // downsampling:
            raise ValueError(
                f"the encoder turned {samples} samples into {latents.shape[-1]} frames, expected "
                f"{samples} / downsampling {downsampling} = {samples // downsampling}; check the downsampling given"
            )
        if not np.isfinite(latents).all():
            raise ValueError(f"the encoder produced NaN or Inf latents for shard {k}; check the autoencoder weights")
        store.write_atomic(name, shard_bytes(rows, latents, identity, downsampling, sample_rate))
        summary.shards_written.append(k)
        summary.examples += len(rows)
        logger.info("wrote %s/%s (%d examples)", out_dir, name, len(rows))
    return summary


class _ShardEncoder:
    """Ray Data actor: builds the encoder once on its device, then encodes whole shards."""

    def __init__(self, table, cfg, encoder_factory, identity, out, downsampling, shard_size, batch_size):
        import ray
        import torch

        self.device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        self.encode_fn = encoder_factory(self.device)
        table = resolve_table(table)
        self.rows = DecodedRows(table["paths"], table["prompts"], cfg, encode_window(cfg, downsampling))
        self.kwargs = dict(
            identity=identity, out_dir=out, shard_size=shard_size, downsampling=downsampling,
            sample_rate=cfg.sample_rate, device=self.device, batch_size=batch_size,
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


def run_encode(
    cfg: DataConfig,
    encoder_factory: EncoderFactory,
    identity: str,
    out: str,
    downsampling: int,
    *,
    batch_size: int = 8,
    num_actors: Optional[int] = None,
) -> EncodeSummary:
    """Encode ``cfg.sources`` into latent shards under ``out`` with a Ray Data actor pool.

    One actor per GPU when the cluster has GPUs (each builds ``encoder_factory('cuda')``), else
    one per CPU (``encoder_factory('cpu')``). Shards already in ``out`` are skipped. Writes
    ``index.json`` at the end; raises BadDataError above ``data.max_bad_fraction``.
    """
    import ray
    import ray.data

    from sa_train.ray_session import ensure_ray

    window = encode_window(cfg, downsampling)
    records = load_records(cfg)
    store = ShardStore(out)
    count = math.ceil(len(records) / cfg.latent_shard_size)
    done = {k for k in range(count) if store.exists(shard_name(k))}
    pending = [k for k in range(count) if k not in done]
    summary = EncodeSummary(shards_skipped=sorted(done))
    logger.info("encode: %d files, %d shards (%d already written), window %d samples", len(records), count,
                count - len(pending), window)
    if pending:
        ensure_ray()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        size = num_actors or max(1, gpus or int(ray.cluster_resources().get("CPU", 1)))
        table = ray.put({"paths": [r.path for r in records], "prompts": [r.prompt for r in records]})
        ds = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=len(pending))
        ds = ds.map_batches(
            _ShardEncoder,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(size, len(pending))),
            fn_constructor_kwargs=dict(
                table=table, cfg=cfg, encoder_factory=encoder_factory, identity=identity, out=out,
                downsampling=downsampling, shard_size=cfg.latent_shard_size, batch_size=batch_size,
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
    metas = [read_shard_metadata(store, n) for n in names]
    index = {
        "format_version": FORMAT_VERSION, "autoencoder_identity": identity, "downsampling": downsampling,
        "sample_rate": cfg.sample_rate, "encode_window_samples": window, "files": len(records),
        "shards": names, "examples": sum(m["examples"] for m in metas), "bad_files_this_run": dict(summary.bad_files.counts),
    }
    store.write_atomic(INDEX_NAME, (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    summary.bad_files.check(cfg.max_bad_fraction)
    return summary
