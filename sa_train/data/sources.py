"""Where audio comes from: folders, manifests and object-storage URIs, with captions and prompts.

A source is one of:

- a local folder, scanned recursively for every extension soundfile can decode; a caption comes
  from a sidecar beside each file (``x.txt`` holds the caption, ``x.json`` holds ``caption`` and
  any other fields);
- a manifest, ``.jsonl``, ``.csv`` or ``.parquet``, one file per row with ``path`` (relative
  paths are resolved against the manifest's folder), ``caption`` and any other fields;
- either of the above behind a URI (``s3://``, ``gs://``, ``file://`` or any fsspec protocol),
  listed and opened through a pyarrow filesystem so files are streamed, never copied first;
  remote audio is opened through a read buffer (:data:`REMOTE_READ_BUFFER`), so a decoder's
  small reads become a few large ranged requests.

Every file becomes an :class:`AudioRecord`; :func:`build_prompt` fills the prompt template from
its caption and fields. Large manifests are not read here but through Ray Data
(:mod:`sa_train.data.manifest`); this module's readers hold every record in one process.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, BinaryIO, Iterable, Optional

import soundfile

logger = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")
CAPTION_KEY = "caption"
# Bytes fetched per read of a remote audio file: one ranged request serves many of a decoder's
# small reads (libsndfile reads a few KB at a time), without fetching a whole long file.
REMOTE_READ_BUFFER = 1 << 20
# Sidecars of a remote folder read at once: each is one small request, dominated by latency.
SIDECAR_READERS = 32

# Extensions of each soundfile (libsndfile) major format. Opus lives in an Ogg container.
_FORMAT_EXTENSIONS = {
    "WAV": ("wav", "wave"),
    "WAVEX": ("wav",),
    "RF64": ("rf64",),
    "W64": ("w64",),
    "FLAC": ("flac",),
    "OGG": ("ogg", "oga", "opus"),
    "MP3": ("mp3",),
    "AIFF": ("aiff", "aif", "aifc"),
    "AU": ("au", "snd"),
    "CAF": ("caf",),
    "IRCAM": ("sf",),
    "VOC": ("voc",),
    "SD2": ("sd2",),
    "NIST": ("nist", "sph"),
    "SVX": ("8svx", "iff"),
    "HTK": ("htk",),
}


@lru_cache(maxsize=1)
def audio_extensions() -> frozenset[str]:
    """Lower-case extensions (no dot) of the formats this soundfile build can read."""
    available = soundfile.available_formats()
    return frozenset(ext for fmt, exts in _FORMAT_EXTENSIONS.items() if fmt in available for ext in exts)


def is_audio_path(path: str) -> bool:
    return posixpath.splitext(path)[1].lower().lstrip(".") in audio_extensions()


def is_uri(location: str) -> bool:
    """Whether ``location`` names a filesystem by scheme (s3://, gs://, file://, ...)."""
    return "://" in location


@dataclass
class AudioRecord:
    """One audio file and its metadata.

    Attributes:
        path: a local path or a URI.
        caption: the caption, or None when the source gave none.
        fields: every other metadata field (genre, bpm, ...), for the prompt template.
        prompt: the prompt built from the template (set by :func:`with_prompts`).
    """

    path: str
    caption: Optional[str] = None
    fields: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""


# ---------------------------------------------------------------------------------------------
# Filesystems


def _filesystem(location: str):
    """(pyarrow filesystem, path inside it, function turning such a path back into a location)."""
    from pyarrow import fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location), lambda p: p
    scheme, rest = location.split("://", 1)
    filesystem, to_location, to_inner = _uri_filesystem(scheme, rest.split("/", 1)[0])
    return filesystem, to_inner(location), to_location


@lru_cache(maxsize=16)
def _uri_filesystem(scheme: str, authority: str):
    """One filesystem per scheme and bucket and process: creating one (credentials, region
    lookup) costs far more than opening a file, and decode tasks open thousands."""
    from pyarrow import fs as pafs

    probe = f"{scheme}://{authority}/" if scheme != "file" else "file:///"
    try:
        filesystem, _ = pafs.FileSystem.from_uri(probe)
    except ValueError:  # pyarrow.lib.ArrowInvalid: a scheme pyarrow has no filesystem for
        pass
    else:
        if scheme in ("file", "s3", "gs", "gcs"):  # paths inside are "bucket/key" or "/abs/path"
            return filesystem, lambda p: f"{scheme}://{p}", lambda uri: uri.split("://", 1)[1]
        return filesystem, lambda p: f"{scheme}://{p}", lambda uri: pafs.FileSystem.from_uri(uri)[1]
    # Go through fsspec behind pyarrow's interface, so the rest of the code sees one API.
    try:
        import fsspec

        fs_spec, _ = fsspec.core.url_to_fs(probe)
    except (ImportError, ValueError) as err:
        raise ValueError(
            f"no filesystem for {scheme}:// ({err}); install the fsspec package for {scheme}:// or use s3://, gs://"
        ) from err
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs_spec)), fs_spec.unstrip_protocol, fs_spec._strip_protocol


class _RemoteRaw(io.RawIOBase):
    """A pyarrow random-access file as a raw stream, for :class:`io.BufferedReader`."""

    def __init__(self, native) -> None:
        self._native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._native.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._native.seek(offset, whence)

    def tell(self) -> int:
        return self._native.tell()

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


class RemoteAudioFile(io.BufferedReader):
    """A remote file read through a buffer of :data:`REMOTE_READ_BUFFER` bytes: each refill is one
    ranged request, and seeks inside the buffer cost nothing."""

    def __init__(self, native, buffer_size: int = REMOTE_READ_BUFFER) -> None:
        self._size = native.size()
        super().__init__(_RemoteRaw(native), buffer_size=buffer_size)

    def size(self) -> int:
        return self._size


def open_audio(location: str) -> str | BinaryIO:
    """Something soundfile can open: a local path as is, a URI as a seekable buffered remote file.

    Remote files are opened random-access, so soundfile's seeks become ranged reads and only the
    decoded window (rounded up to the read buffer) travels over the network.
    """
    if not is_uri(location):
        return location
    filesystem, inner, _ = _filesystem(location)
    return RemoteAudioFile(filesystem.open_input_file(inner))


def read_text(location: str) -> str:
    """The whole text file at a local path or URI."""
    if not is_uri(location):
        with open(location, encoding="utf-8") as f:
            return f.read()
    filesystem, inner, _ = _filesystem(location)
    with filesystem.open_input_stream(inner) as f:
        return f.read().decode("utf-8")


def _join(base_dir: str, relative: str) -> str:
    if is_uri(relative) or os.path.isabs(relative):
        return relative
    if is_uri(base_dir):
        scheme, rest = base_dir.split("://", 1)
        return f"{scheme}://" + posixpath.normpath(posixpath.join(rest, relative))
    return os.path.normpath(os.path.join(base_dir, relative))


def _dirname(location: str) -> str:
    if is_uri(location):
        return location.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(location))


# ---------------------------------------------------------------------------------------------
# Folders and sidecars


def scan_folder(location: str) -> list[AudioRecord]:
    """Every audio file under a folder (recursively, sorted), captioned from its sidecars."""
    from pyarrow import fs as pafs

    filesystem, inner, to_location = _filesystem(location)
    info = filesystem.get_file_info(inner)
    if info.type != pafs.FileType.Directory:
        raise ValueError(f"data source {location!r} is not a folder, a .jsonl/.csv manifest or an audio file")
    entries = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
    files = {e.path for e in entries if e.type == pafs.FileType.File}
    audio = sorted(p for p in files if is_audio_path(p))

    def record(path: str) -> AudioRecord:
        stem = posixpath.splitext(path)[0]
        caption, fields = None, {}
        if stem + ".json" in files:
            fields = _read_json_sidecar(to_location(stem + ".json"))
            caption = fields.pop(CAPTION_KEY, None)
        elif stem + ".txt" in files:
            caption = read_text(to_location(stem + ".txt")).strip() or None
        return AudioRecord(path=to_location(path), caption=caption, fields=fields)

    if is_uri(location) and len(audio) > 1:
        # One request per sidecar: read many at once (latency-bound), in the same order.
        with ThreadPoolExecutor(max_workers=SIDECAR_READERS) as pool:
            records = list(pool.map(record, audio))
        if len(audio) > 10_000:
            logger.warning(
                "data source %s: %d files captioned from sidecars, read on this driver; for a large corpus write a "
                "manifest once (`sa-train data check %s --out manifest.jsonl`) and train from it", location,
                len(audio), location,
            )
    else:
        records = [record(path) for path in audio]
    if not records:
        logger.warning("no audio files (%s) under %s", ", ".join(sorted(audio_extensions())), location)
    return records


def _read_json_sidecar(location: str) -> dict[str, Any]:
    try:
        value = json.loads(read_text(location))
    except json.JSONDecodeError as err:
        raise ValueError(f"caption sidecar {location} is not valid JSON ({err}); fix or remove it") from err
    if not isinstance(value, dict):
        raise ValueError(f"caption sidecar {location} must hold a JSON object with 'caption' and other fields")
    return value


# ---------------------------------------------------------------------------------------------
# Manifests


def read_parquet_rows(location: str) -> list[dict[str, Any]]:
    """Every row of a Parquet manifest as a dict (nulls as None, as in JSON)."""
    import pyarrow.parquet as pq

    filesystem, inner, _ = _filesystem(location)
    try:
        return pq.read_table(inner, filesystem=filesystem).to_pylist()
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"manifest {location} is not a readable Parquet file ({err})") from err


def read_manifest(location: str) -> list[AudioRecord]:
    """Records of a JSONL, CSV or Parquet manifest; every column but ``path`` and ``caption`` is a field."""
    if location.lower().endswith(".parquet"):
        return _manifest_records(location, read_parquet_rows(location))
    text = read_text(location)
    if location.lower().endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in rows]
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"manifest {location} line {number} is not valid JSON: {err}") from err
            if not isinstance(rows[-1], dict):
                raise ValueError(f"manifest {location} line {number} must be a JSON object with a 'path'")
    return _manifest_records(location, rows)


def _manifest_records(location: str, rows: Iterable[dict[str, Any]], first_row: int = 1) -> list[AudioRecord]:
    base = _dirname(location)
    return [manifest_record(location, base, row, number) for number, row in enumerate(rows, start=first_row)]


def manifest_record(location: str, base: str, row: dict[str, Any], number: int) -> AudioRecord:
    """The record of manifest row ``number`` (1-based); ``base`` is the manifest's folder."""
    if not row.get("path"):
        raise ValueError(f"manifest {location} row {number} has no 'path'; every row needs path (and usually caption)")
    fields = {k: v for k, v in row.items() if k not in ("path", CAPTION_KEY)}
    caption = row.get(CAPTION_KEY)
    return AudioRecord(path=_join(base, str(row["path"])), caption=caption or None, fields=fields)


def collect_records(sources: Iterable[str]) -> list[AudioRecord]:
    """All records of every source, in the order given (folders sorted by path)."""
    records: list[AudioRecord] = []
    for source in sources:
        source = str(source)
        if source.lower().endswith(MANIFEST_SUFFIXES):
            found = read_manifest(source)
        elif is_audio_path(source):
            found = [AudioRecord(path=source if is_uri(source) else os.path.abspath(source))]
        elif not is_uri(source) and not os.path.exists(source):
            raise ValueError(f"data source {source!r} does not exist; give a folder, a manifest or a URI")
        else:
            found = scan_folder(source)
        logger.info("data source %s: %d files", source, len(found))
        records.extend(found)
    return records


# ---------------------------------------------------------------------------------------------
# Prompts


def template_fields(template: str) -> list[str]:
    """The field names a prompt template uses, e.g. ['caption', 'bpm'] for '{caption}, {bpm} BPM'."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as err:
        raise ValueError(f"data.prompt_template={template!r} is not a valid template: {err}") from err


def build_prompt(template: str, record: AudioRecord) -> str:
    """Fill ``template`` from the record's caption and fields.

    A missing caption counts as an empty one (it is reported by `sa-train data check`); any
    other missing field is an error naming the field, the file and the fields it has.
    """
    values = {k: v for k, v in record.fields.items() if v is not None}
    values[CAPTION_KEY] = record.caption or ""
    for name in template_fields(template):
        if name.split(".")[0].split("[")[0] not in values:
            raise ValueError(
                f"data.prompt_template={template!r} uses field {name!r}, which {record.path} lacks "
                f"(its fields: {sorted(values)}); add it to the manifest or sidecar, or change the template"
            )
    try:
        return template.format_map(values)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ValueError(
            f"data.prompt_template={template!r} cannot be filled for {record.path} ({err}); check the field's type"
        ) from err


def with_prompts(records: list[AudioRecord], template: str) -> list[AudioRecord]:
    """Set every record's prompt; fails on the first record the template cannot fill."""
    missing = 0
    for record in records:
        record.prompt = build_prompt(template, record)
        missing += record.caption is None
    if missing and CAPTION_KEY in template_fields(template):
        logger.warning("%d of %d files have no caption; their prompts use an empty caption", missing, len(records))
    return records
