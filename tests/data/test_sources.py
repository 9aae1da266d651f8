"""Finding audio files and their captions: folders, sidecars, manifests, URIs, prompt templates."""

from __future__ import annotations

import json
import os

import pytest

from audio_helpers import names, write_audio
from sa_train.config.fields import ConfigError
from sa_train.data.config import DataConfig
from sa_train.data.pipeline import load_records
from sa_train.data.sources import (
    AudioRecord,
    audio_extensions,
    build_prompt,
    collect_records,
    read_manifest,
    scan_folder,
)


def test_extensions_cover_the_formats_soundfile_reads():
    assert {"wav", "flac", "ogg", "opus", "mp3", "aiff", "aif"} <= audio_extensions()
    assert "txt" not in audio_extensions() and "json" not in audio_extensions()


def test_folder_scan_is_recursive_sorted_and_skips_non_audio(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for rel in ["z.wav", "a.FLAC", "b/deep/c.ogg", "b/d.mp3"]:
        write_audio(tmp_path / rel, seconds=0.2, format="MP3" if rel.endswith("mp3") else None)
    (tmp_path / "notes.md").write_text("not audio")
    records = scan_folder(str(tmp_path))
    assert [os.path.relpath(r.path, tmp_path) for r in records] == ["a.FLAC", "b/d.mp3", "b/deep/c.ogg", "z.wav"]
    assert all(os.path.isabs(r.path) for r in records)


def test_captions_come_from_txt_and_json_sidecars(tmp_path):
    write_audio(tmp_path / "plain.wav", seconds=0.2)
    write_audio(tmp_path / "rich.wav", seconds=0.2)
    write_audio(tmp_path / "bare.wav", seconds=0.2)
    (tmp_path / "plain.txt").write_text("  rain on a window \n")
    (tmp_path / "rich.json").write_text(json.dumps({"caption": "a funk groove", "genre": "funk", "bpm": 98}))
    by_name = {os.path.basename(r.path): r for r in scan_folder(str(tmp_path))}
    assert by_name["plain.wav"].caption == "rain on a window"
    assert by_name["rich.wav"].caption == "a funk groove"
    assert by_name["rich.wav"].fields == {"genre": "funk", "bpm": 98}
    assert by_name["bare.wav"].caption is None


def test_malformed_json_sidecar_names_the_file(tmp_path):
    write_audio(tmp_path / "x.wav", seconds=0.2)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="x.json"):
        scan_folder(str(tmp_path))


def test_jsonl_manifest_resolves_relative_paths_against_its_folder(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "lists").mkdir()
    write_audio(tmp_path / "audio" / "a.wav", seconds=0.2)
    manifest = tmp_path / "lists" / "train.jsonl"
    manifest.write_text(
        json.dumps({"path": "../audio/a.wav", "caption": "a tone", "genre": "test", "bpm": 120}) + "\n\n"
        + json.dumps({"path": "/abs/elsewhere.wav"}) + "\n"
    )
    first, second = read_manifest(str(manifest))
    assert first.path == str(tmp_path / "audio" / "a.wav") and os.path.exists(first.path)
    assert first.caption == "a tone" and first.fields == {"genre": "test", "bpm": 120}
    assert second.path == "/abs/elsewhere.wav" and second.caption is None


def test_csv_manifest_reads_any_columns(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,caption,genre,bpm\nx.wav,a beat,hiphop,90\ny.wav,,,\n")
    x, y = read_manifest(str(manifest))
    assert x.path == str(tmp_path / "x.wav") and x.caption == "a beat" and x.fields == {"genre": "hiphop", "bpm": "90"}
    assert y.caption is None and y.fields == {}


def test_manifest_row_without_path_is_an_error_naming_the_row(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.wav"}\n{"caption": "no path"}\n')
    with pytest.raises(ValueError, match="row 2"):
        read_manifest(str(manifest))


def test_prompt_template_fills_fields():
    record = AudioRecord("x.wav", "a funk groove", {"genre": "funk", "bpm": 98})
    assert build_prompt("{caption}, {genre}, {bpm} BPM", record) == "a funk groove, funk, 98 BPM"


def test_prompt_template_missing_field_error_names_field_and_file():
    record = AudioRecord("/data/x.wav", "a groove", {"bpm": 98})
    with pytest.raises(ValueError) as err:
        build_prompt("{caption}, {genre}", record)
    assert "'genre'" in str(err.value) and "/data/x.wav" in str(err.value) and "bpm" in str(err.value)


def test_missing_caption_gives_an_empty_caption():
    assert build_prompt("{caption}", AudioRecord("x.wav")) == ""


def test_load_records_fails_before_training_on_a_template_gap(tmp_path):
    write_audio(tmp_path / "a.wav", seconds=0.2)
    with pytest.raises(ValueError, match="'bpm'"):
        load_records(DataConfig(sources=[str(tmp_path)], prompt_template="{caption} at {bpm} BPM"))


def test_empty_or_missing_sources_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.sources"):
        load_records(DataConfig(sources=[]))
    with pytest.raises(ValueError, match="does not exist"):
        collect_records([str(tmp_path / "nowhere")])
    with pytest.raises(ConfigError, match="no audio files"):
        load_records(DataConfig(sources=[str(tmp_path)]))


def test_sources_mix_folders_manifests_and_single_files(tmp_path):
    (tmp_path / "f").mkdir()
    write_audio(tmp_path / "f" / "a.wav", seconds=0.2)
    single = write_audio(tmp_path / "single.flac", seconds=0.2)
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "single.flac", "caption": "c"}) + "\n")
    records = collect_records([str(tmp_path / "f"), str(tmp_path / "m.jsonl"), single])
    assert names(r.path for r in records) == {"a.wav", "single.flac"} and len(records) == 3


def test_uri_folder_is_listed_through_the_filesystem_layer(tmp_path):
    write_audio(tmp_path / "u.wav", seconds=0.2)
    (tmp_path / "u.txt").write_text("caption over a uri")
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "u.wav", "caption": "from manifest"}) + "\n")
    (record,) = collect_records([f"file://{tmp_path}"])
    assert record.path == f"file://{tmp_path}/u.wav" and record.caption == "caption over a uri"
    (from_manifest,) = collect_records([f"file://{tmp_path}/m.jsonl"])
    assert from_manifest.path == f"file://{tmp_path}/u.wav" and from_manifest.caption == "from manifest"
