"""Large manifests read through Ray Data, and the local shuffle buffer that orders them.

A corpus of 800,000 files must not become 800,000 records on the driver, nor a Python list
pickled into every decode task. For a manifest (``.jsonl``, ``.csv``, ``.parquet``, local or
behind a URI) the driver only checks the header (the ``path`` column is there, the prompt
template's fields are columns) and plans; the rows are read by Ray Data read tasks and turned
into ``(path, prompt)`` blocks of at most :func:`block_files` files by Ray tasks, which also
check every row (a path, the template's fields) and name the manifest and row of the first bad
one. The blocks stay in the object store; the driver holds their references and row counts
(a :class:`ManifestCatalog`), and a decode task fetches only the blocks its rows need.

Order: :class:`ShuffleWindows`, a local shuffle buffer over the blocks (the manifest's shards).
Each epoch visits the blocks in a new seeded order, cut into windows of consecutive blocks holding
about ``data.shuffle_buffer_files`` files, and permutes the files within each window, so a
window mixes files from several shards that were far apart in the manifest. It is a pure function
of ``(seed, epoch, position)``: any worker computes any row's file, so the stream stays
reproducible example by example and a resumed run skips rows as before. A manifest of no more
than ``shuffle_buffer_files`` files is one window, permuted exactly as the driver path permutes it
(:func:`sa_train.data.pipeline.epoch_order`), so a small manifest gives the same stream either way.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sa_train.config.fields import ConfigError
from sa_train.data.sources import (
    CAPTION_KEY,
    MANIFEST_SUFFIXES,
    _dirname,
    _filesystem,
    build_prompt,
    is_uri,
    manifest_record,
    template_fields,
)

logger = logging.getLogger(__name__)

# A local JSONL/CSV manifest up to this size is read on the driver (about 40,000 rows): the
# demo and small corpora keep the simple path; anything larger, remote or Parquet goes to Ray Data.
DRIVER_MANIFEST_MAX_BYTES = 8 << 20
# Raw bytes of manifest per Ray Data read block, so a single large file is parsed by many tasks.
READ_BLOCK_BYTES = 4 << 20
# Blocks of (path, prompt) a decode process keeps fetched: a few windows' worth.
CACHED_BLOCKS = 64
HEADER_BYTES = 1 << 20


class ManifestError(ConfigError):
    """A manifest that cannot be trained from: the message names the file, the row and the fix."""


def block_files(shuffle_buffer_files: int) -> int:
    """Files per catalog block: an eighth of the shuffle buffer (so a window mixes about eight
    shards), between 64 and 4096."""
    return int(min(4096, max(64, shuffle_buffer_files // 8)))


def _kind(location: str) -> str:
    suffix = location.lower().rsplit(".", 1)[-1]
    return {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}[suffix]


def is_manifest(source: str) -> bool:
    return str(source).lower().endswith(MANIFEST_SUFFIXES)


def use_ray_data(sources: Sequence[str], reader: str) -> bool:
    """Whether ``data.sources`` are read through Ray Data (``data.manifest_reader``).

    ``auto``: when every source is a manifest and one of them is Parquet, remote, or larger than
    :data:`DRIVER_MANIFEST_MAX_BYTES`; folders and single files always use the driver path.
    """
    sources = [str(s) for s in sources]
    all_manifests = bool(sources) and all(is_manifest(s) for s in sources)
    if reader == "driver":
        return False
    if reader == "ray_data":
        if not all_manifests:
            others = [s for s in sources if not is_manifest(s)]
            raise ConfigError(
                f"data.manifest_reader=ray_data reads manifests (.jsonl, .csv, .parquet) only, but data.sources has "
                f"{others}; write a manifest of them once with `sa-train data check {' '.join(others)} --out "
                f"manifest.jsonl`, or set data.manifest_reader=auto"
            )
        return True
    if not all_manifests:
        return False
    for source in sources:
        if source.lower().endswith(".parquet") or is_uri(source):
            return True
        if os.path.exists(source) and os.path.getsize(source) > DRIVER_MANIFEST_MAX_BYTES:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# The driver's cheap check: columns, from the first bytes or the Parquet footer


def manifest_columns(location: str) -> list[str]:
    """The column names of a manifest, read from its header (CSV), first row (JSONL) or schema
    (Parquet), without reading the rows."""
    from pyarrow import fs as pafs

    filesystem, inner, _ = _filesystem(location)
    info = filesystem.get_file_info(inner)
    if info.type != pafs.FileType.File:
        raise ManifestError(f"data source {location!r} does not exist; give a manifest, a folder or a URI")
    kind = _kind(location)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            with filesystem.open_input_file(inner) as f:
                return list(pq.read_schema(f).names)
        except Exception as err:  # pyarrow raises ArrowInvalid (a ValueError) or OSError
            raise ManifestError(f"manifest {location} is not a readable Parquet file ({err})") from err
    with filesystem.open_input_stream(inner) as f:
        head = f.read(HEADER_BYTES).decode("utf-8", errors="replace")
    lines = head.splitlines()
    if kind == "csv":
        header = next(csv.reader(io.StringIO(lines[0] if lines else "")), [])
        return [name for name in header if name]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"manifest {location} line {number} is not valid JSON: {err}") from err
        if not isinstance(row, dict):
            raise ManifestError(f"manifest {location} line {number} must be a JSON object with a 'path'")
        return list(row)
    return []


def check_manifest_columns(location: str, template: str) -> list[str]:
    """Fail, naming the file and the fix, when the manifest lacks ``path`` or a column the prompt
    template uses (JSONL: judged by the first row; every row is checked later, in Ray tasks)."""
    columns = manifest_columns(location)
    if not columns:
        raise ManifestError(f"manifest {location} is empty; it needs a row per audio file with path and caption")
    if "path" not in columns:
        raise ManifestError(
            f"manifest {location} has no 'path' column (its columns: {columns}); every row needs path (the audio "
            f"file, relative to the manifest's folder or a URI) and usually caption. Rename the column, or rewrite "
            f"the manifest with `sa-train data check`"
        )
    wanted = [name.split(".")[0].split("[")[0] for name in template_fields(template)]
    missing = sorted({name for name in wanted if name != CAPTION_KEY and name not in columns})
    if missing:
        raise ManifestError(
            f"data.prompt_template={template!r} uses {missing}, which manifest {location} has no column for "
            f"(its columns: {columns}); add the column, or change the template"
        )
    return columns


# ---------------------------------------------------------------------------------------------
# Reading through Ray Data, preparing (path, prompt) blocks in Ray tasks


@dataclass(frozen=True)
class ManifestCatalog:
    """The files of the manifests: blocks of ``path``/``prompt`` columns in the object store.

    Attributes:
        blocks: ObjectRefs of pyarrow tables (path, prompt), in manifest order.
        block_rows: files in each block.
        sources: the manifests.
        missing_captions: rows without a caption (their prompts use an empty caption).
    """

    blocks: tuple
    block_rows: tuple
    sources: tuple
    missing_captions: int = 0

    def __len__(self) -> int:
        return int(sum(self.block_rows))

    def first_rows(self) -> np.ndarray:
        """(blocks + 1,) the manifest row (0-based, over all sources) each block starts at, then the total."""
        return np.concatenate([[0], np.cumsum(np.asarray(self.block_rows, dtype=np.int64))])


def _read_dataset(location: str, columns: list[str]):
    import pyarrow as pa

    import ray.data

    filesystem, inner, _ = _filesystem(location)
    size = filesystem.get_file_info(inner).size or 0
    blocks = int(max(1, min(256, size // READ_BLOCK_BYTES)))
    kind = _kind(location)
    if kind == "jsonl":
        ds = ray.data.read_text(inner, filesystem=filesystem, drop_empty_lines=True, override_num_blocks=blocks)
    elif kind == "csv":
        from pyarrow import csv as pacsv

        # Every value a string, as Python's csv module gives it: "007" stays "007" in a prompt.
        ds = ray.data.read_csv(
            inner, filesystem=filesystem, override_num_blocks=blocks,
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
        )
    else:
        ds = ray.data.read_parquet(inner, filesystem=filesystem, override_num_blocks=blocks)
    ds.context.execution_options.preserve_order = True  # block order is row order
    return ds


def _rows_of(block, kind: str, location: str, first_row: int) -> list[dict[str, Any]]:
    """A raw Ray Data block of a manifest as row dicts, as the driver path reads them."""
    if kind == "jsonl":
        rows = []
        for number, line in enumerate(block.column("text").to_pylist(), start=first_row):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"manifest {location} row {number} (of its non-empty lines) is not valid JSON: {err}")
            if not isinstance(row, dict):
                raise ValueError(f"manifest {location} row {number} must be a JSON object with a 'path'")
            rows.append(row)
        return rows
    rows = block.to_pylist()
    if kind == "csv":  # as csv.DictReader on the driver: an empty cell is no value
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in rows]
    return rows


def _prepare_block(block, kind: str, location: str, first_row: int, template: str, chunk: int):
    """Ray task: one raw manifest block -> (summary, table, table, ...) of at most ``chunk`` files
    each. A bad row does not raise (Ray would bury the message in a traceback): the summary
    carries the first error and the tables are empty."""
    import pyarrow as pa

    n = block.num_rows
    pieces = -(-n // chunk)
    base = _dirname(location)
    paths, prompts, missing = [], [], 0
    try:
        rows = _rows_of(block, kind, location, first_row)
        for number, row in enumerate(rows, start=first_row):
            record = manifest_record(location, base, row, number)
            try:
                prompts.append(build_prompt(template, record))
            except ValueError as err:
                raise ValueError(f"manifest {location} row {number}: {err}") from err
            paths.append(record.path)
            missing += record.caption is None
    except ValueError as err:
        empty = pa.table({"path": pa.array([], pa.string()), "prompt": pa.array([], pa.string())})
        return ({"rows": 0, "missing_captions": 0, "error": str(err)}, *([empty] * pieces))
    table = pa.table({"path": pa.array(paths, pa.string()), "prompt": pa.array(prompts, pa.string())})
    summary = {"rows": n, "missing_captions": missing, "error": None}
    return (summary, *(table.slice(i * chunk, chunk) for i in range(pieces)))


def read_catalog(sources: Sequence[str], template: str, shuffle_buffer_files: int) -> ManifestCatalog:
    """Check the manifests' columns here, read and check every row in Ray tasks; raises
    :class:`ManifestError` naming the manifest and row before anything trains."""
    import ray

    from sa_train.ray_session import ensure_ray

    sources = [str(s) for s in sources]
    columns = {source: check_manifest_columns(source, template) for source in sources}  # before Ray starts
    ensure_ray()
    prepare = ray.remote(num_cpus=1)(_prepare_block)
    chunk = block_files(shuffle_buffer_files)
    summaries, blocks, counts = [], [], []
    for source in sources:
        kind = _kind(source)
        next_row = 1
        try:
            for bundle in _read_dataset(source, columns[source]).iter_internal_ref_bundles():
                for entry in bundle.blocks:
                    ref, meta = (entry.ref, entry.metadata) if hasattr(entry, "ref") else entry  # older Ray: a tuple
                    n = int(meta.num_rows or 0)
                    if n == 0:
                        continue
                    pieces = -(-n // chunk)
                    out = prepare.options(num_returns=1 + pieces).remote(ref, kind, source, next_row, template, chunk)
                    summaries.append((source, out[0]))
                    blocks += out[1:]
                    counts += [min(chunk, n - i * chunk) for i in range(pieces)]
                    next_row += n
        except Exception as err:  # a Ray Data read task failed: a malformed CSV, Parquet or encoding
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            # Ray's message is a traceback and advice: keep the exception line (e.g. "ValueError: ...").
            last = [line for line in lines if re.match(r"[\w.]*(Error|Exception|Invalid)\w*: ", line)][-1:]
            last = last or lines[-1:] or [repr(err)]
            raise ManifestError(
                f"manifest {source} could not be read ({last[0].strip()}); every row needs the header's columns "
                f"(CSV), one JSON object per line (JSONL) or a readable Parquet file: fix it, or rewrite it with "
                f"`sa-train data check {source} --out clean.jsonl`"
            ) from err
    missing = 0
    for source, ref in summaries:
        summary = ray.get(ref)
        if summary["error"]:
            raise ManifestError(summary["error"] + "; fix the row or remove it from the manifest")
        missing += summary["missing_captions"]
    catalog = ManifestCatalog(tuple(blocks), tuple(counts), tuple(sources), missing)
    if not len(catalog):
        raise ManifestError(f"data.sources={sources} holds no rows; a manifest needs a row per audio file")
    if missing and CAPTION_KEY in template_fields(template):
        logger.warning("%d of %d files have no caption; their prompts use an empty caption", missing, len(catalog))
    logger.info("manifests %s: %d files in %d blocks (read through Ray Data)", sources, len(catalog), len(blocks))
    return catalog


# ---------------------------------------------------------------------------------------------
# The decode side: fetched blocks, and the order


_BLOCKS: "OrderedDict[str, tuple[list, list]]" = OrderedDict()


def block_columns(ref) -> tuple[list, list]:
    """(paths, prompts) of one catalog block, fetched once per process (LRU of :data:`CACHED_BLOCKS`)."""
    import ray

    key = ref.hex()
    if key in _BLOCKS:
        _BLOCKS.move_to_end(key)
        return _BLOCKS[key]
    table = ray.get(ref)
    columns = (table.column("path").to_pylist(), table.column("prompt").to_pylist())
    _BLOCKS[key] = columns
    while len(_BLOCKS) > CACHED_BLOCKS:
        _BLOCKS.popitem(last=False)
    return columns


class ShuffleWindows:
    """The file each position of each epoch reads: a seeded local shuffle buffer over blocks.

    Args:
        block_rows: files per block, in manifest order (block ``b`` holds the files
            ``first_row[b] .. first_row[b + 1] - 1``).
        window_files: the buffer, ``data.shuffle_buffer_files``; a window is that many files'
            worth of consecutive blocks (at least two blocks) in the epoch's block order.
        seed, shuffle: as the audio stream's; without ``shuffle``, manifest order.
    """

    def __init__(self, block_rows: Sequence[int], window_files: int, seed: int, shuffle: bool = True) -> None:
        self.block_rows = np.asarray(block_rows, dtype=np.int64)
        self.first_row = np.concatenate([[0], np.cumsum(self.block_rows)])
        self.total = int(self.first_row[-1])
        self.window_files = int(window_files)
        biggest = int(self.block_rows.max()) if len(self.block_rows) else 1
        self.window_blocks = max(2, self.window_files // max(1, biggest))
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self._epochs: "OrderedDict[int, tuple[list, np.ndarray]]" = OrderedDict()
        self._windows: "OrderedDict[tuple[int, int], np.ndarray]" = OrderedDict()

    @property
    def one_window(self) -> bool:
        return self.total <= self.window_files

    def epoch_windows(self, epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(the blocks of each window, (windows + 1,) the epoch position each window starts at)."""
        if epoch not in self._epochs:
            k = len(self.block_rows)
            order = np.random.default_rng([self.seed, epoch, 0xB10C]).permutation(k) if self.shuffle else np.arange(k)
            groups = [order[i : i + self.window_blocks] for i in range(0, k, self.window_blocks)]
            starts = np.concatenate([[0], np.cumsum([self.block_rows[g].sum() for g in groups])])
            self._epochs[epoch] = (groups, starts)
            if len(self._epochs) > 4:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def window(self, epoch: int, index: int) -> np.ndarray:
        """The files (manifest rows) of window ``index`` of ``epoch``, in the order they are read."""
        key = (epoch, index)
        if key not in self._windows:
            groups, _ = self.epoch_windows(epoch)
            files = np.concatenate([np.arange(self.first_row[b], self.first_row[b + 1]) for b in np.sort(groups[index])])
            if self.shuffle:
                files = files[np.random.default_rng([self.seed, epoch, 0x5EED, index]).permutation(len(files))]
            self._windows[key] = files
            if len(self._windows) > 8:
                self._windows.popitem(last=False)
        return self._windows[key]

    def locate(self, row: int) -> tuple[int, int]:
        """(epoch, manifest row) of stream row ``row``."""
        from sa_train.data.pipeline import epoch_order

        epoch, position = divmod(int(row), self.total)
        if self.one_window:  # the driver path's permutation, so small manifests match it exactly
            return epoch, int(epoch_order(self.total, self.seed, epoch, self.shuffle)[position])
        _, starts = self.epoch_windows(epoch)
        index = int(np.searchsorted(starts, position, side="right")) - 1
        return epoch, int(self.window(epoch, index)[position - starts[index]])

    def block_of(self, file: int) -> tuple[int, int]:
        """(block, row inside it) of manifest row ``file``."""
        block = int(np.searchsorted(self.first_row, file, side="right")) - 1
        return block, int(file - self.first_row[block])


def lookup(catalog_blocks: Sequence[Any], windows: ShuffleWindows, row: int) -> tuple[int, int, str, str]:
    """(epoch, file index, path, prompt) of stream row ``row``."""
    epoch, file = windows.locate(row)
    block, offset = windows.block_of(file)
    paths, prompts = block_columns(catalog_blocks[block])
    return epoch, file, paths[offset], prompts[offset]



class CatalogColumn(Sequence):
    """One column (``path`` or ``prompt``) of a catalog as a read-only sequence, fetched block by
    block on access (``sa-train encode`` reads its shards' files through it)."""

    def __init__(self, catalog: ManifestCatalog, column: str) -> None:
        self.blocks, self.first_row = list(catalog.blocks), catalog.first_rows()
        self.column = ("path", "prompt").index(column)

    def __len__(self) -> int:
        return int(self.first_row[-1])

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index) + (len(self) if int(index) < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(index)
        block = int(np.searchsorted(self.first_row, index, side="right")) - 1
        return block_columns(self.blocks[block])[self.column][index - int(self.first_row[block])]
