"""`ray job submit` against a real `ray start --head` cluster with token authentication.

This is what cluster/README.md tells users to run, on 127.0.0.1: the checkout is uploaded with
`--working-dir`, cluster/runtime_env.yaml is the runtime env, and the entrypoint is
`python -m sa_train train ...`, which joins the cluster through the RAY_ADDRESS the job sets.

The cluster is this module's own: its HOME, token, ports and temp dir are private to it, and the
teardown ends only the processes of that temp dir (never `ray stop`, which would end every Ray
instance on the machine, including other tests').
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .conftest import DIFFUSION_OVERRIDES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The venv's console scripts: the `ray` CLI, and the `python` the job's entrypoint resolves on PATH.
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
TRAIN_STEPS = 4
RUN_NAME = "job-submit"


@dataclass
class TokenCluster:
    dashboard_url: str
    env: dict[str, str]  # the client side: same isolated HOME (so the same token) and RAY_AUTH_MODE=token
    token: str
    temp_dir: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_env(home: Path) -> dict[str, str]:
    """The environment of the cluster and of the submitting shell: token auth, nothing inherited that
    would point Ray or MLflow elsewhere, and the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_")) and k != "PYTHONPATH"}
    env.update(
        HOME=str(home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def processes_of(temp_dir: str) -> list[psutil.Process]:
    """This cluster's processes: those started with its temp dir on the command line (GCS, raylet,
    dashboard, monitors) and all their descendants (workers retitle themselves `ray::...`, so their
    command line no longer names the temp dir)."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(proc.info["cmdline"] or []):
                roots.append(proc)
        except psutil.Error:
            continue
    found = {p.pid: p for p in roots}
    for root in roots:
        try:
            found.update({child.pid: child for child in root.children(recursive=True)})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_cluster(temp_dir: str) -> None:
    """SIGTERM this cluster's processes, then SIGKILL what is left after a grace period."""
    procs = processes_of(temp_dir)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    # Workers started while we were terminating (raylet respawning) are caught by a second sweep.
    for proc in processes_of(temp_dir):
        try:
            proc.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    if not Path(RAY).exists():
        pytest.skip(f"no `ray` console script beside {sys.executable}: ray[default] is not installed in this env")
    home = tmp_path_factory.mktemp("ray_home")
    env = isolated_env(home)
    generated = run_cli([RAY, "get-auth-token", "--generate"], env, timeout=60)
    assert generated.returncode == 0, generated.stderr
    token = generated.stdout.strip()
    assert token and (home / ".ray" / "auth_token").exists()

    # Unix socket paths under the temp dir must stay short (~107 chars), so not pytest's tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="sa_ray_", dir="/tmp")
    try:
        dashboard_port = start_head(env, temp_dir)
        yield TokenCluster(f"http://127.0.0.1:{dashboard_port}", env, token, temp_dir)
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def start_head(env: dict[str, str], temp_dir: str, attempts: int = 2) -> int:
    """`ray start --head` on 127.0.0.1 with fresh free ports; returns the dashboard (job server) port.

    Every fixed default port (GCS 6379, client server 10001, dashboard 8265, agent 52365) is
    replaced: other tests and agents may run their own Ray on this machine at the same time. A port
    taken between picking and binding is retried once with new ports.
    """
    for attempt in range(attempts):
        dashboard_port = free_port()
        start = [
            RAY, "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", f"--port={free_port()}", f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=4", "--num-gpus=0",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]
        started = run_cli(start, env, timeout=180)
        if started.returncode == 0:
            return dashboard_port
        output = started.stdout + started.stderr
        if "in use" not in output.lower() or attempt == attempts - 1:
            raise AssertionError(f"`ray start --head` failed ({started.returncode}):\n{output[-4000:]}")
        logger.warning("ray start: a port was taken, retrying with new ports")
        stop_cluster(temp_dir)
    raise AssertionError("unreachable")


def submit(cluster: TokenCluster, env: dict[str, str], entrypoint: list[str], timeout: float):
    command = [
        RAY, "job", "submit", "--address", cluster.dashboard_url, "--working-dir", str(REPO_ROOT),
        "--runtime-env", "cluster/runtime_env.yaml", "--", *entrypoint,
    ]
    return run_cli(command, env, timeout=timeout)


def test_job_submit_with_token_trains_and_records_mlflow_run_and_checkpoint(token_cluster, synth_manifest, tmp_path):
    from mlflow.tracking import MlflowClient

    from sa_train.training.checkpoint import find_latest_checkpoint, read_state

    storage = tmp_path / "runs"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The tiny preset a user would submit, made small enough to finish in a minute or two on CPU.
    entrypoint = [
        "python", "-m", "sa_train", "train", "configs/experiments/tiny_diffusion.yaml",
        *DIFFUSION_OVERRIDES, "model.autoencoder.kind=none", "model.autoencoder.pretrained=null",
        "model.unet.in_channels=2", "data.window_samples=4096", f"data.sources=[{synth_manifest}]",
        f"storage.path={storage}", f"tracking.uri={tracking_uri}", f"tracking.run_name={RUN_NAME}",
        f"training.steps={TRAIN_STEPS}", "training.checkpoint_every=2", "training.log_every=1",
        "distributed.num_workers=2", "distributed.device=cpu",
    ]
    started = time.monotonic()
    done = submit(token_cluster, token_cluster.env, entrypoint, timeout=420)
    logger.info("ray job submit took %.0f s", time.monotonic() - started)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"ray job submit exited {done.returncode}:\n{output[-6000:]}"
    assert "succeeded" in output.lower(), output[-3000:]

    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=f"tags.mlflow.runName = '{RUN_NAME}'",
    )
    assert len(runs) == 1, f"expected one MLflow run named {RUN_NAME}, found {len(runs)}"
    run = runs[0]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, TRAIN_STEPS + 1))

    state = read_state(find_latest_checkpoint(storage / RUN_NAME))
    assert state.step == TRAIN_STEPS


# The job server's answers: 403 for a token that is not the cluster's, 401 for a request without one.
@pytest.mark.parametrize(
    ("client_token", "refusal"), [("wrong", "forbidden"), (None, "unauthorized")], ids=["wrong_token", "no_token"],
)
def test_job_submit_without_the_cluster_token_is_refused(token_cluster, tmp_path, client_token, refusal):
    # A fresh HOME holds no token file, so only RAY_AUTH_TOKEN could speak for this client.
    (tmp_path / "other_home").mkdir()
    env = isolated_env(tmp_path / "other_home")
    if client_token is None:
        del env["RAY_AUTH_MODE"]  # a client that does not know the cluster wants a token sends none
    else:
        env["RAY_AUTH_TOKEN"] = client_token
    done = submit(token_cluster, env, ["python", "-c", "print('should never run')"], timeout=120)
    output = (done.stdout + done.stderr).lower()
    assert done.returncode != 0, f"a client with token {client_token!r} was let in:\n{output[-3000:]}"
    assert "authentication" in output and refusal in output, output[-3000:]
    assert "should never run" not in output
