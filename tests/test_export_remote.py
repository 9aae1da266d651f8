"""`sa-train export` and `generate` with remote locations (s3://, gs://), through pyarrow.fs. A
file:// URI takes the same code path as object storage (FileSystem.from_uri, listings, streams),
so these run without a cloud."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent / "tracking"))  # tiny_exports (importlib mode)

from tiny_exports import tiny_exports, write_checkpoint, write_manifest  # noqa: E402

from sa_train.cli.main import main  # noqa: E402
from sa_train.config import load_config  # noqa: E402
from sa_train.export import export_checkpoint, load_exported  # noqa: E402


def remote_run(tmp_path: Path) -> tuple[Path, str]:
    """A run folder in a 'bucket': an older complete checkpoint and a newer one that lacks its rng file
    (a checkpoint cut short by a lost node), plus a ZeRO shard that an export must not need."""
    cfg = load_config(None, ["training.stage=autoencoder", "data.window_samples=32768"])
    run = tmp_path / "bucket" / "runs" / "vae"
    write_checkpoint(run, cfg, step=2, mlflow_run_id="run-of-step-2")
    broken = write_checkpoint(run, cfg, step=4)
    (broken / "rng" / "rank0.safetensors").unlink()
    return run, run.as_uri()


def test_export_reads_the_newest_complete_checkpoint_of_a_remote_run_and_writes_to_a_remote_folder(tmp_path):
    run, uri = remote_run(tmp_path)
    out = (tmp_path / "bucket" / "exported" / "vae").as_uri()
    assert export_checkpoint(uri, out) == out
    meta = json.loads((tmp_path / "bucket" / "exported" / "vae" / "meta.json").read_text())
    assert meta["step"] == 2 and meta["mlflow_run_id"] == "run-of-step-2"
    assert meta["source_checkpoint"] == f"file://{run}/checkpoint_000002"
    assert meta["git_commit"]  # the commit of the exporting code, or "unknown" outside a checkout
    exported = load_exported(out, weights="raw", expect_stage="autoencoder")
    assert exported.meta["identity"] == meta["identity"]


def test_cli_export_and_generate_take_uris_and_name_what_is_missing(tmp_path, capsys):
    _, uri = remote_run(tmp_path)
    out = (tmp_path / "bucket" / "exported" / "cli_vae").as_uri()
    assert main(["-q", "export", uri, "--out", out]) == 0
    assert "identity" in capsys.readouterr().out

    empty = (tmp_path / "bucket" / "nothing_here").as_uri()
    assert main(["-q", "export", empty, "--out", str(tmp_path / "x")]) == 2
    assert "holds no files" in capsys.readouterr().err
    assert main(["-q", "generate", empty, "--prompt", "rain", "--seconds", "1", "--out", str(tmp_path / "y")]) == 2
    assert "nothing_here is not a folder there" in capsys.readouterr().err


def test_generate_reads_a_remote_model_and_uploads_the_clips(tmp_path):
    manifest = write_manifest(tmp_path / "data" / "manifest.jsonl")
    _, diffusion = tiny_exports(tmp_path / "local", manifest)
    bucket = tmp_path / "bucket"
    shutil.copytree(diffusion, bucket / "exported" / "diffusion")
    prompts = bucket / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "a sine tone", "seconds_total": 0.25}) + "\n")
    destination = bucket / "generated"
    code = main(["-q", "generate", (bucket / "exported" / "diffusion").as_uri(), "--prompts-file", prompts.as_uri(),
                 "--steps", "2", "--out", destination.as_uri()])
    assert code == 0
    rows = [json.loads(line) for line in (destination / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a sine tone"]
    audio, rate = sf.read(str(destination / rows[0]["path"]))
    assert audio.shape == (math.ceil(0.25 * rate), 2)
