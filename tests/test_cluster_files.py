"""The cluster launch files in cluster/ agree with the experiment they launch.

Every file is parsed the way its tool parses it (yaml.safe_load, Ray's cluster schema, Ray's
runtime-env exclude matcher) and compared with the experiment loaded through
sa_train.config.load_config, so a changed worker count, GPU count, entrypoint or auth setting in
one place fails here until every place agrees again.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from sa_train.config import load_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
EXPERIMENT = "configs/experiments/stable_audio_1_0_diffusion.yaml"

# Facts of the AWS instance type the workers run on (p4d.24xlarge), not of our files.
P4D_INSTANCE = "p4d.24xlarge"
P4D_GPUS = 8
P4D_VCPUS = 96
P4D_NETWORK_CARDS = 4

# Local-only folders that must never be uploaded with a job or rsynced to the nodes.
LOCAL_ONLY_SAMPLES = {
    ".venv": ".venv/lib/python3.11/site-packages/torch/__init__.py",
    "runs": "runs/tiny/checkpoint_000001/state.pt",
    "data": "data/synth/clip_0001.wav",
    "mlflow.db": "mlflow.db",
    "mlartifacts": "mlartifacts/1/abc/artifacts/sample.wav",
}
ENV_FILE = "sa_train_env.sh"


# ---- loading -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def experiment():
    return load_config(REPO / EXPERIMENT)


@pytest.fixture(scope="module")
def aws() -> dict:
    return yaml.safe_load((CLUSTER / "aws.yaml").read_text())


@pytest.fixture(scope="module")
def kuberay_docs() -> list:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay_rayjob.yaml").read_text()) if d]


@pytest.fixture(scope="module")
def rayjob(kuberay_docs) -> dict:
    jobs = [d for d in kuberay_docs if d.get("kind") == "RayJob"]
    assert len(jobs) == 1, "cluster/kuberay_rayjob.yaml must hold exactly one RayJob"
    return jobs[0]


@pytest.fixture(scope="module")
def runtime_env() -> dict:
    return yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())


@pytest.fixture(scope="module")
def readme() -> str:
    return (CLUSTER / "README.md").read_text()


# ---- helpers -------------------------------------------------------------------------------


def worker_type(aws: dict) -> dict:
    """The one non-head node type of the ray up file."""
    types = {k: v for k, v in aws["available_node_types"].items() if k != aws["head_node_type"]}
    assert len(types) == 1, f"expected one worker node type, found {sorted(types)}"
    return next(iter(types.values()))


def head_type(aws: dict) -> dict:
    return aws["available_node_types"][aws["head_node_type"]]


def aws_worker_gpus(aws: dict) -> int:
    """GPUs the ray up file provides to Ray Train: GPUs per node x nodes of the worker type."""
    workers = worker_type(aws)
    nodes = min(workers["max_workers"], aws["max_workers"])
    return int(workers["resources"].get("GPU", 0)) * nodes


def kuberay_worker_gpus(rayjob: dict) -> int:
    total = 0
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        (container,) = group["template"]["spec"]["containers"]
        total += group["replicas"] * int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
    return total


def exported_env(script: str) -> dict[str, str]:
    """`export NAME=value` lines of a shell script, quotes removed."""
    found = re.findall(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$", script, flags=re.M)
    return {name: value.strip("\"'") for name, value in found}


def aws_node_env(aws: dict) -> dict[str, str]:
    """The environment every node's `ray start` runs with: the env file written by setup."""
    writers = [c for c in aws["setup_commands"] if f"> ~/{ENV_FILE}" in c]
    assert len(writers) == 1, f"one setup command must write ~/{ENV_FILE}"
    return exported_env(writers[0])


def ray_start_line(commands: list[str]) -> str:
    lines = [c for c in commands if "ray start" in c]
    assert len(lines) == 1, f"expected one `ray start` command in {commands}"
    return lines[0]


def start_flag(command: str, flag: str) -> str | None:
    match = re.search(rf"--{flag}[= ](\S+)", command)
    return match.group(1) if match else None


def train_invocation(command: str) -> tuple[str, list[str]]:
    """(config path, overrides) of a `python -m sa_train train CONFIG [key=value ...]` command."""
    words = shlex.split(command)
    start = words.index("sa_train")
    assert words[start - 2 : start + 2] == ["python", "-m", "sa_train", "train"], command
    config, *rest = words[start + 2 :]
    return config, [w for w in rest if "=" in w and not w.startswith("-")]


def readme_submits(readme: str) -> list[str]:
    """Every `ray job submit` command of the README, with line continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", readme)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("ray job submit")]


def submitted_entrypoint(command: str) -> str:
    return command.split(" -- ", 1)[1]


def uploaded(rel_path: str, excludes: list[str]) -> bool:
    """Whether Ray's working_dir upload keeps a file: neither it nor a parent folder may match.

    Uses Ray's own matcher (the one `ray job submit` applies), so anchoring and wildcard rules are
    Ray's, not a re-implementation of them.
    """
    from ray._private.runtime_env.packaging import _get_excludes

    match = _get_excludes(REPO, excludes)
    path = REPO / rel_path
    return not any(match(p) for p in [path, *path.parents] if p != REPO and REPO in p.parents)


def container_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def rayjob_pod_specs(rayjob: dict) -> dict[str, dict]:
    spec = rayjob["spec"]
    pods = {"head": spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]}
    for group in spec["rayClusterSpec"]["workerGroupSpecs"]:
        pods[f"worker group {group['groupName']}"] = group["template"]["spec"]
    pods["submitter"] = spec["submitterPodTemplate"]["spec"]
    return pods


# ---- the ray up file (AWS) -----------------------------------------------------------------


def test_experiment_is_a_multi_node_gpu_run_on_shared_storage(experiment):
    # What the cluster files are built around; if the experiment changes kind, they must too.
    assert experiment.distributed.device == "gpu"
    assert experiment.distributed.num_workers * experiment.distributed.gpus_per_worker > P4D_GPUS
    assert urlparse(experiment.storage.path).scheme == "s3"


def test_aws_cluster_file_passes_rays_own_schema(aws):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(aws)))


def test_aws_worker_gpus_equal_the_experiments_workers(aws, experiment):
    workers = worker_type(aws)
    assert workers["node_config"]["InstanceType"] == P4D_INSTANCE
    assert workers["resources"]["GPU"] == P4D_GPUS, "a p4d.24xlarge has 8 A100s"
    assert workers["min_workers"] == workers["max_workers"] == aws["max_workers"], (
        "the job needs every GPU from the start: min_workers = max_workers = cluster max_workers"
    )
    dist = experiment.distributed
    assert aws_worker_gpus(aws) == dist.num_workers * dist.gpus_per_worker


def test_aws_workers_fit_on_their_nodes(aws, experiment):
    workers = worker_type(aws)
    dist = experiment.distributed
    workers_per_node = workers["resources"]["GPU"] / dist.gpus_per_worker
    assert workers["resources"]["CPU"] <= P4D_VCPUS
    assert workers_per_node * dist.cpus_per_worker <= workers["resources"]["CPU"]


def test_aws_head_has_no_gpu_and_takes_no_tasks(aws):
    head = head_type(aws)
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU", 0) == 0
    start = ray_start_line(aws["head_start_ray_commands"])
    assert "--head" in start
    assert start_flag(start, "num-gpus") in (None, "0")
    assert start_flag(start, "num-cpus") == "0"


def test_aws_worker_start_command_declares_the_node_type_resources(aws):
    workers = worker_type(aws)
    start = ray_start_line(aws["worker_start_ray_commands"])
    assert start_flag(start, "num-gpus") == str(workers["resources"]["GPU"])
    assert start_flag(start, "num-cpus") == str(workers["resources"]["CPU"])


def test_aws_workers_use_every_efa_card_in_one_placement_group(aws):
    node = worker_type(aws)["node_config"]
    interfaces = node["NetworkInterfaces"]
    assert len(interfaces) == P4D_NETWORK_CARDS
    assert all(i["InterfaceType"] == "efa" for i in interfaces)
    assert sorted(i["NetworkCardIndex"] for i in interfaces) == list(range(P4D_NETWORK_CARDS))
    for i in interfaces:
        # AWS: the primary interface is card 0 / device 0; every other card uses device 1.
        assert i["DeviceIndex"] == (0 if i["NetworkCardIndex"] == 0 else 1)
        assert i.get("SubnetId") and i.get("Groups"), "each interface needs its subnet and group"
    # Ray refuses subnets/groups at the node level next to NetworkInterfaces.
    assert not {"SubnetId", "SubnetIds", "SecurityGroupIds"} & set(node)
    assert node["Placement"]["GroupName"]
    env = aws_node_env(aws)
    assert env["FI_PROVIDER"] == "efa"
    assert env["NCCL_SOCKET_IFNAME"]


def test_aws_nodes_have_s3_access_for_the_s3_paths_of_the_experiment(aws, experiment):
    s3_paths = [experiment.storage.path, experiment.data.latents, experiment.model.autoencoder.pretrained]
    assert all(urlparse(p).scheme == "s3" for p in s3_paths), s3_paths
    for name, node_type in aws["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), f"node type {name} has no IAM instance profile"


def test_aws_token_auth_is_on_for_head_and_workers(aws):
    assert aws_node_env(aws)["RAY_AUTH_MODE"] == "token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = ray_start_line(aws[key])
        source = start.find(f"source ~/{ENV_FILE}")
        assert 0 <= source < start.find("ray start"), f"{key}: `ray start` must run with ~/{ENV_FILE} sourced"
    # The shared token reaches every node at Ray's default token path.
    assert "~/.ray/auth_token" in aws["file_mounts"]


def test_aws_setup_and_the_image_install_the_gpu_lock(aws):
    setup = "\n".join(aws["setup_commands"])
    assert re.search(r"cd ~/sa_train && [^\n]*tools/install_locked\.sh ~/sa_train_venv requirements-gpu\.lock", setup)
    # It installs from the checkout copied to the node, which holds the lock.
    assert "~/sa_train" in aws["file_mounts"]
    assert (REPO / "requirements-gpu.lock").exists() and (REPO / "tools" / "install_locked.sh").exists()
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^RUN .*tools/install_locked\.sh \S+ requirements-gpu\.lock", dockerfile, re.MULTILINE)
    assert "pip install" not in dockerfile.split("COPY", 1)[1], "the image installs from the lock only"


def test_the_gpu_lock_the_cluster_installs_carries_the_paper_metric_models(lock_pins):
    """The paper-scale sweeps score with OpenL3 and PaSST on the cluster, which installs only
    requirements-gpu.lock: it must hold the eval extra, at the versions CI tests (the dev lock)."""
    gpu, dev = lock_pins("requirements-gpu.lock"), lock_pins("requirements-dev.lock")
    for sweep in ("text_encoder_ablation.yaml", "timing_ablation.yaml"):
        text = (REPO / "sweeps" / sweep).read_text()
        assert "embedder: openl3" in text and "tagger: passt" in text, sweep
    for package in ("torchopenl3", "hear21passt", "xformers"):
        assert package in gpu, f"requirements-gpu.lock lacks {package}"
    shared = set(gpu) & set(dev)
    assert {"torchopenl3", "hear21passt", "torch"} <= shared
    assert {p: gpu[p] for p in shared} == {p: dev[p] for p in shared}


def test_aws_rsync_leaves_out_the_local_only_folders(aws):
    excludes = aws["rsync_exclude"]
    for folder in LOCAL_ONLY_SAMPLES:
        assert f"/{folder}" in excludes, f"rsync_exclude lacks /{folder}"
    # Unanchored "data" would also drop the sa_train/data package.
    assert "data" not in excludes


# ---- the KubeRay RayJob --------------------------------------------------------------------


def test_kuberay_worker_gpus_equal_the_experiments_workers(rayjob, experiment):
    dist = experiment.distributed
    assert kuberay_worker_gpus(rayjob) == dist.num_workers * dist.gpus_per_worker
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == P4D_GPUS


def test_kuberay_entrypoint_trains_the_experiment_with_a_fixed_run_name(rayjob):
    config, overrides = train_invocation(rayjob["spec"]["entrypoint"])
    assert config == EXPERIMENT
    assert (REPO / config).is_file()
    # The overrides are real keys with valid values, and the run name is fixed: that is what
    # makes a retried RayJob resume instead of starting a new run.
    resolved = load_config(REPO / config, overrides)
    assert resolved.tracking.run_name
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True


def test_kuberay_runtime_env_is_runtime_env_yaml_plus_the_image_working_dir(rayjob, runtime_env):
    embedded = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    working_dir = embedded.pop("working_dir")
    assert working_dir.startswith("/"), "the RayJob's working_dir is a folder inside the image"
    assert embedded == runtime_env


# KubeRay releases that know the fields the RayJob uses: authOptions.mode (1.5.1), authOptions.secretName (1.6.0).
KUBERAY_AUTH_OPTIONS = (1, 5, 1)
KUBERAY_AUTH_SECRET_NAME = (1, 6, 0)


def stated_kuberay_version(manifest: str) -> tuple[int, ...]:
    found = re.search(r"KubeRay >= (\d+)\.(\d+)\.(\d+)", manifest)
    assert found, "cluster/kuberay_rayjob.yaml must state the KubeRay version it needs (KubeRay >= X.Y.Z)"
    return tuple(int(x) for x in found.groups())


def test_kuberay_token_auth_comes_from_auth_options_with_the_readmes_secret(rayjob, readme):
    auth = rayjob["spec"]["rayClusterSpec"]["authOptions"]
    assert auth["mode"] == "token"
    needed = KUBERAY_AUTH_SECRET_NAME if auth.get("secretName") else KUBERAY_AUTH_OPTIONS
    manifest = (CLUSTER / "kuberay_rayjob.yaml").read_text()
    assert stated_kuberay_version(manifest) >= needed
    assert re.search(rf"KubeRay operator {needed[0]}\.{needed[1]}\.{needed[2]} or newer", readme)
    # The secret the README and the manifest's header create is the one authOptions names, with the
    # key KubeRay reads (auth_token).
    for text in (readme, manifest):
        created = re.findall(r"kubectl create secret generic (\S+) --from-literal=(\w+)=", text)
        assert created == [(auth["secretName"], "auth_token")], created
    # KubeRay injects RAY_AUTH_MODE / RAY_AUTH_TOKEN into every pod: none sets its own (a token from
    # another secret would win over the injected one, and break the operator's job polling).
    for pod, spec in rayjob_pod_specs(rayjob).items():
        env = container_env(spec["containers"][0])
        assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(env), f"{pod} sets Ray auth env vars itself"


def test_kuberay_pods_have_s3_access(kuberay_docs, rayjob, experiment):
    assert urlparse(experiment.storage.path).scheme == "s3"
    accounts = {d["metadata"]["name"]: d for d in kuberay_docs if d.get("kind") == "ServiceAccount"}
    for pod, spec in rayjob_pod_specs(rayjob).items():
        account = accounts.get(spec.get("serviceAccountName"))
        assert account is not None, f"{pod}: runs under no ServiceAccount defined in the manifest"
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


# ---- the runtime env -----------------------------------------------------------------------


def test_runtime_env_needs_no_installs_and_is_valid_for_ray(runtime_env):
    from ray.runtime_env import RuntimeEnv

    # No pip/uv/conda/container: a job must start without the network (local clusters, tests).
    assert set(runtime_env) <= {"env_vars", "excludes"}, sorted(runtime_env)
    RuntimeEnv(**runtime_env)
    # Auth is the cluster's and the client's setting; a job must not carry it.
    assert not [k for k in runtime_env["env_vars"] if k.startswith("RAY_AUTH")]


def test_runtime_env_excludes_local_only_folders_but_keeps_the_package(runtime_env):
    excludes = runtime_env["excludes"]
    for folder, sample in LOCAL_ONLY_SAMPLES.items():
        assert not uploaded(sample, excludes), f"{sample} would be uploaded with every job"
    kept = [p for top in ("sa_train", "configs", "cluster") for p in (REPO / top).rglob("*") if p.is_file()]
    kept = [p.relative_to(REPO).as_posix() for p in kept if "__pycache__" not in p.parts]
    assert "sa_train/data/config.py" in kept and EXPERIMENT in kept
    dropped = [p for p in kept + ["pyproject.toml"] if not uploaded(p, excludes)]
    assert dropped == [], f"the job upload would lose {dropped[:5]}"


# ---- across files --------------------------------------------------------------------------


def test_every_file_documents_mlflow_tracking_uri(aws, rayjob, runtime_env, readme):
    assert urlparse(aws_node_env(aws)["MLFLOW_TRACKING_URI"]).scheme in ("http", "https")
    assert "MLFLOW_TRACKING_URI" in runtime_env["env_vars"]
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    pods = rayjob_pod_specs(rayjob)
    for pod in [p for p in pods if p != "submitter"]:
        value = container_env(pods[pod]["containers"][0]).get("MLFLOW_TRACKING_URI", {}).get("value", "")
        assert urlparse(value).scheme in ("http", "https"), f"{pod}: no MLFLOW_TRACKING_URI server address"
    assert "MLFLOW_TRACKING_URI" in readme


def test_readme_submits_the_same_run_as_the_rayjob(readme, rayjob):
    submits = readme_submits(readme)
    assert submits, "cluster/README.md shows no `ray job submit` command"
    for command in submits:
        assert "--runtime-env cluster/runtime_env.yaml" in command and "--working-dir ." in command, command
    trains = [submitted_entrypoint(c) for c in submits if " sa_train train " in c]
    for entrypoint in trains:
        config, overrides = train_invocation(entrypoint)
        load_config(REPO / config, overrides)  # every shown config exists and its overrides are valid
    diffusion = [e for e in trains if train_invocation(e)[0] == EXPERIMENT]
    # Launch and resume: the same command twice, the same run name, as the RayJob's entrypoint.
    assert len(diffusion) >= 2
    assert all(train_invocation(e) == train_invocation(rayjob["spec"]["entrypoint"]) for e in diffusion)
    assert "export RAY_AUTH_MODE=token" in readme


def test_checks_catch_a_changed_worker_count(aws, rayjob, experiment):
    # The GPU totals above are computed from the files, so a drifted file gives another total.
    wanted = experiment.distributed.num_workers * experiment.distributed.gpus_per_worker
    fewer_nodes = copy.deepcopy(aws)
    worker_type(fewer_nodes)["max_workers"] = 7
    fewer_gpus = copy.deepcopy(aws)
    worker_type(fewer_gpus)["resources"]["GPU"] = 4
    fewer_pods = copy.deepcopy(rayjob)
    fewer_pods["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = 4
    assert aws_worker_gpus(aws) == wanted == kuberay_worker_gpus(rayjob)
    assert wanted not in (aws_worker_gpus(fewer_nodes), aws_worker_gpus(fewer_gpus), kuberay_worker_gpus(fewer_pods))


# ---- the laptop, the network and the installs (ray up) ------------------------------------


def test_the_laptop_gets_boto3_from_the_cluster_extra_and_its_lock(readme, lock_pins):
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"boto3\b", d) for d in project["optional-dependencies"]["cluster"])
    lock, base = lock_pins("requirements-cluster.lock"), lock_pins("requirements.lock")
    assert "boto3" in lock and "botocore" in lock
    # The cluster lock is the base lock plus boto3's own dependencies, at the same versions.
    assert {k: lock.get(k) for k in base} == base
    makefile = (REPO / "Makefile").read_text()
    assert "$(UV_COMPILE) --extra cluster -c requirements.lock -o requirements-cluster.lock" in makefile
    assert "tools/install_locked.sh .venv requirements-cluster.lock" in readme


def test_the_head_is_reachable_and_the_workers_go_out_through_a_nat(aws, readme):
    provider = aws["provider"]
    assert provider["use_internal_ips"] is True and provider["use_external_head_ip"] is True
    (head_nic,) = head_type(aws)["node_config"]["NetworkInterfaces"]
    assert head_nic["AssociatePublicIpAddress"] is True and head_nic["DeviceIndex"] == 0
    worker_subnets = {nic["SubnetId"] for nic in worker_type(aws)["node_config"]["NetworkInterfaces"]}
    assert len(worker_subnets) == 1 and head_nic["SubnetId"] not in worker_subnets
    assert "PUBLIC" in head_nic["SubnetId"] and "PRIVATE" in worker_subnets.pop()
    # The README builds that layout: the public route table to an internet gateway, the private one
    # to a NAT gateway that lives in the public subnet.
    commands = " ".join(shell_commands(readme))
    assert re.search(r"create-route --route-table-id \$PUBLIC_RT .*--gateway-id \$IGW", commands)
    assert re.search(r"create-nat-gateway --subnet-id \$PUBLIC ", commands)
    assert re.search(r"create-route --route-table-id \$PRIVATE_RT .*--nat-gateway-id \$NAT", commands)
    assert "associate-route-table --route-table-id $PRIVATE_RT --subnet-id $PRIVATE" in commands


def test_setup_installs_the_uv_version_the_locks_were_made_with(aws):
    makefile_uv = re.search(r'"uv==([\d.]+)"', (REPO / "Makefile").read_text()).group(1)
    setup = "\n".join(aws["setup_commands"])
    assert re.search(rf"https://astral\.sh/uv/{re.escape(makefile_uv)}/install\.sh", setup)


def test_submitted_jobs_and_the_image_carry_the_git_folder_for_the_commit_tag(runtime_env):
    from sa_train.tracking.code_version import GIT_COMMIT_ENV

    assert uploaded(".git/HEAD", runtime_env["excludes"]), "the job upload must keep .git (git_commit tag)"
    assert uploaded(".git/refs/heads/main", runtime_env["excludes"])
    ignored = [line.strip() for line in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()]
    assert ".git" not in ignored and ".git/" not in ignored
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"ARG {GIT_COMMIT_ENV}" in dockerfile and f"ENV {GIT_COMMIT_ENV}=${{{GIT_COMMIT_ENV}}}" in dockerfile


# ---- every command the README shows exists with those flags --------------------------------


def shell_commands(text: str) -> list[str]:
    """The commands of the README's ```bash blocks: continuations joined, comments dropped, split
    at &&, || and ; (a command after `ray job submit ... --` stays with it)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands += [c.strip() for c in re.split(r"\s(?:&&|\|\||;)\s", line) if c.strip()]
    return commands


def sa_train_argv(words: list[str]) -> list[str] | None:
    """The arguments after `sa-train` / `python -m sa_train`, or None for another program."""
    if words[:1] == ["sa-train"]:
        return words[1:]
    if words[:3] == ["python", "-m", "sa_train"]:
        return words[3:]
    return None


def click_command(group, words: list[str]):
    command = group
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def check_command(words: list[str]) -> str | None:
    """What is wrong with one command line (None: it parses), for ray, mlflow and sa-train."""
    import click
    import mlflow.cli
    from ray.scripts.scripts import cli as ray_cli

    from sa_train.cli.main import build_parser

    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefixes
        words = words[1:]
    words = [w for w in words if w != "&"]
    argv = sa_train_argv(words)
    if argv is not None:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            return f"sa-train rejects {argv}"
        return None
    groups = {"ray": ray_cli, "mlflow": mlflow.cli.cli}
    if not words or words[0] not in groups:
        return None
    command, rest = click_command(groups[words[0]], words[1:])
    if command is groups[words[0]]:
        return f"{words[0]} has no subcommand {rest[:1]}"
    try:
        ctx = command.make_context(" ".join(words[:2]), list(rest), resilient_parsing=False)
    except click.ClickException as err:
        return f"{' '.join(words[:3])}: {err.format_message()}"
    entrypoint = ctx.params.get("entrypoint")
    if entrypoint:  # ray job submit ... -- <entrypoint>: the entrypoint must parse as well
        return check_command(list(entrypoint))
    return None


def test_every_ray_mlflow_and_sa_train_command_in_the_readme_exists_with_those_flags(readme, rayjob):
    commands = shell_commands(readme)
    checked = [c for c in commands if shlex.split(c)[0] in ("ray", "mlflow", "sa-train", "python")]
    assert len(checked) >= 15, checked  # the README's launch, submit, follow and stop commands
    problems = [f"{c}\n  -> {p}" for c in checked if (p := check_command(shlex.split(c)))]
    assert not problems, "\n".join(problems)
    # The RayJob's entrypoint too.
    assert check_command(shlex.split(rayjob["spec"]["entrypoint"])) is None
    # The submitted stages cover export and register with remote locations.
    entrypoints = [submitted_entrypoint(c) for c in readme_submits(readme)]
    assert any(" export s3://" in e and "--out s3://" in e for e in entrypoints)
    assert any(" register s3://" in e for e in entrypoints)


def test_the_command_check_catches_a_wrong_flag_or_subcommand():
    assert check_command(shlex.split("ray job submit --adress http://x -- python -m sa_train plan c.yaml"))
    assert check_command(shlex.split("ray job submit --address http://x -- python -m sa_train export run --outt d"))
    assert check_command(shlex.split("ray upp cluster/aws.yaml"))
    assert check_command(shlex.split("python -m sa_train generate m --prompt p --seconds 1 --out d")) is None
