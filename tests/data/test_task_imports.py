"""Ray Data's read tasks run without torch.

Each task process Ray Data starts imports the module of its function. torch costs such a process
1.5-3 s of CPU, spent on the cores the training ranks are using while the first steps run. The
functions that decode audio and crop latent shards need numpy only, so their modules must not pull
torch in (tensors are made in the training worker, by ``AudioBatch.from_numpy_dict``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from latent_helpers import DOWN, encode, ramp_corpus
from sa_train.data.config import DataConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in a fresh interpreter: one latent read task's work and one audio decode batch's work, as
# Ray Data's task processes call them, then reports which modules were loaded.
TASK_SCRIPT = """
import json, sys
import numpy as np
from sa_train.data.config import DataConfig
from sa_train.data.latents import _load_latent_batch, validate_shards, window_frames_for
from sa_train.data.pipeline import decode_rows, load_records
import sa_train.training.run_board  # what data_start imports when a run board is named (every launch)

args = json.loads(sys.argv[1])
cfg = DataConfig(**args["cfg"])
names, meta = validate_shards(cfg.latents, "ae-1")
crops = _load_latent_batch({"id": np.array([0, 1])}, cfg.latents, names, window_frames_for(cfg, meta, cfg.latents),
                           seed=0, shuffle=True, crop="random", latent_channels=meta["latent_channels"])
records = load_records(cfg)
columns, counter = decode_rows(np.arange(3), [r.path for r in records], [r.prompt for r in records], cfg, 0, True)
print(json.dumps({"crops": len(crops["prompt"]), "decoded": len(columns["prompt"]), "bad": counter.bad,
                  "torch": "torch" in sys.modules}))
"""


def test_latent_crops_and_audio_decoding_run_without_importing_torch(tmp_path):
    args = {"sources": [ramp_corpus(tmp_path / "audio")], "window_samples": 16 * DOWN,
            "encode_window_samples": 64 * DOWN, "latents": str(tmp_path / "latents")}
    encode(DataConfig(**args), args["latents"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", TASK_SCRIPT, json.dumps({"cfg": args})], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["crops"] > 0 and report["decoded"] == 3 and report["bad"] == 0, report  # the work was done
    assert report["torch"] is False, "a Ray Data task's code imported torch"
