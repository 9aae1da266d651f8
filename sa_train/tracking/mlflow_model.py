"""An exported diffusion model as an MLflow model: `mlflow.pyfunc.load_model(uri).predict(...)` gives audio.

    model = mlflow.pyfunc.load_model("models:/stable_audio/3")
    clips = model.predict({"prompt": ["rain on a tin roof"], "seconds_total": [8.0]}, params={"steps": 50})
    clips[0]["audio"]   # float32 (channels, samples), trimmed to seconds_total; clips[0]["sample_rate"]

The MLflow model holds the sa_train export folder as its artifact ``sa_train_export`` and, for a
latent model, the exported autoencoder that decodes it as ``autoencoder``: nothing outside the
model is read when it loads. Registered versions carry lineage tags (:data:`LINEAGE_TAGS`): the
model's and its autoencoder's identities (sa_train.export.model_identity), a hash of the training
data manifest, the git commit of the code that trained it, and the MLflow run it came from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow.pyfunc

logger = logging.getLogger(__name__)

EXPORT_ARTIFACT = "sa_train_export"
AUTOENCODER_ARTIFACT = "autoencoder"
MODEL_NAME = "model"  # the name of the logged model in its run
DEVICE_ENV = "SA_TRAIN_DEVICE"  # where a loaded model generates: cuda or cpu (default: cuda when available)

TAG_IDENTITY = "sa_train.model_identity"
TAG_AUTOENCODER = "sa_train.autoencoder_identity"
TAG_DATA = "sa_train.data_manifest_sha256"
TAG_COMMIT = "git_commit"
TAG_SOURCE_RUN = "sa_train.source_run_id"
TAG_STEP = "sa_train.step"
LINEAGE_TAGS = (TAG_IDENTITY, TAG_AUTOENCODER, TAG_DATA, TAG_COMMIT, TAG_SOURCE_RUN, TAG_STEP)
# Sampling settings a caller may change per call (params of predict); the rest come from the model's config.
PARAMS = {"steps": "long", "cfg_scale": "double", "seed": "long", "sampler": "string", "seconds_start": "double"}


class AudioGenerationModel(mlflow.pyfunc.PythonModel):
    """pyfunc flavour of an exported diffusion model: prompts + seconds_total in, audio out."""

    def load_context(self, context) -> None:
        import torch

        from sa_train.export import load_exported
        from sa_train.generation import Generator

        device = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
        exported = load_exported(context.artifacts[EXPORT_ARTIFACT], expect_stage="diffusion")
        autoencoder = None
        if AUTOENCODER_ARTIFACT in context.artifacts:
            autoencoder = load_exported(context.artifacts[AUTOENCODER_ARTIFACT], expect_stage="autoencoder").model
        self.generator = Generator(exported.model, autoencoder, exported.cfg, device)

    def predict(self, context, model_input, params: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        """model_input: columns (or keys) ``prompt`` and ``seconds_total``. Returns one dict per prompt:
        prompt, seconds_total, sample_rate and audio, a float32 array (channels, samples)."""
        prompts, seconds = read_requests(model_input)
        params = dict(params or {})
        start = float(params.pop("seconds_start", 0.0) or 0.0)
        changes = {k: v for k, v in params.items() if v is not None and k in PARAMS}
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            raise ValueError(f"unknown params {unknown}; this model takes {sorted(PARAMS)}")
        sampling = dataclasses.replace(self.generator.cfg.model.sampling, **changes)
        clips = self.generator.generate(prompts, seconds, [start] * len(prompts), sampling, trim=True)
        return [{"prompt": c.prompt, "seconds_total": c.seconds_total, "sample_rate": c.sample_rate, "audio": c.audio}
                for c in clips]


def read_requests(model_input: Any) -> tuple[list[str], list[float]]:
    """(prompts, seconds_total) from a DataFrame, a dict of lists or a list of dicts."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # a pandas DataFrame
        model_input = model_input.to_dict(orient="list")
    if isinstance(model_input, list):
        model_input = {"prompt": [row.get("prompt") for row in model_input],
                       "seconds_total": [row.get("seconds_total") for row in model_input]}
    if not isinstance(model_input, dict) or "prompt" not in model_input or "seconds_total" not in model_input:
        raise ValueError("the input needs 'prompt' and 'seconds_total' (a DataFrame with those columns, a dict of "
                         "lists, or a list of dicts), e.g. {'prompt': ['rain'], 'seconds_total': [8.0]}")
    prompts, seconds = model_input["prompt"], model_input["seconds_total"]
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    seconds = [seconds] if isinstance(seconds, (int, float)) else list(seconds)
    if len(seconds) == 1 and len(prompts) > 1:
        seconds = seconds * len(prompts)
    if len(prompts) != len(seconds) or not prompts:
        raise ValueError(f"got {len(prompts)} prompts and {len(seconds)} seconds_total values; give one length per "
                         "prompt (or one for all)")
    if any(s is None or float(s) <= 0 for s in seconds):
        raise ValueError(f"seconds_total must be a positive number of seconds for every prompt, got {seconds}")
    return [str(p) for p in prompts], [float(s) for s in seconds]


def signature(default_sampling) -> "mlflow.models.ModelSignature":
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    defaults = {"steps": default_sampling.steps, "cfg_scale": float(default_sampling.cfg_scale),
                "seed": default_sampling.seed, "sampler": default_sampling.sampler, "seconds_start": 0.0}
    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt"), ColSpec("double", "seconds_total")]),
        params=ParamSchema([ParamSpec(name, kind, defaults[name]) for name, kind in PARAMS.items()]),
    )


@dataclass
class LoggedAudioModel:
    model_uri: str  # runs:/... or models:/m-...; what mlflow.pyfunc.load_model takes
    run_id: str
    lineage: dict[str, str]
    registered_name: Optional[str] = None
    version: Optional[str] = None

    def summary(self) -> str:
        where = f"registered as {self.registered_name} version {self.version}" if self.version else "not registered"
        return f"logged MLflow model {self.model_uri} in run {self.run_id}, {where}; lineage: " + ", ".join(
            f"{k}={v}" for k, v in self.lineage.items())


def log_exported_model(
    exported: str | Path,
    tracking_uri: str,
    run_id: Optional[str] = None,
    register_as: Optional[str] = None,
) -> LoggedAudioModel:
    """Log an exported diffusion model (local folder or URI) as a pyfunc model into the MLflow run
    ``run_id`` (default: the run that trained it, from its meta.json), and register it as
    ``register_as`` with lineage tags when given."""
    from mlflow.tracking import MlflowClient

    from sa_train.config import from_yaml
    from sa_train.export import CONFIG_FILE, META_FILE, _local_folder
    from sa_train.tracking.lineage import lineage_tags

    folder, tmp = _local_folder(exported)
    ae_folder, ae_tmp = None, None
    try:
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise ValueError(f"{exported} is not an exported sa_train model (no {META_FILE}); create one with "
                             "`sa-train export RUN --out DIR`")
        meta = json.loads(meta_path.read_text())
        if meta.get("stage") != "diffusion":
            raise ValueError(f"{exported} holds a {meta.get('stage')} model; only a diffusion model generates audio "
                             "as an MLflow model: log the exported diffusion model that uses it")
        cfg = from_yaml((folder / CONFIG_FILE).read_text())
        artifacts = {EXPORT_ARTIFACT: str(folder)}
        ae_meta = None
        if cfg.model.autoencoder.kind != "none":
            pretrained = cfg.model.autoencoder.pretrained
            if not pretrained:
                raise ValueError(f"{exported}: its config has no model.autoencoder.pretrained, so the autoencoder that "
                                 "decodes its latents is unknown; export the model from its training run again")
            ae_folder, ae_tmp = _local_folder(pretrained)
            if not (ae_folder / META_FILE).is_file():
                raise ValueError(f"the autoencoder of {exported} (model.autoencoder.pretrained={pretrained}) is not an "
                                 "exported model here; make it readable from this machine (or copy it and point "
                                 "the key at the copy) before logging the model")
            ae_meta = json.loads((ae_folder / META_FILE).read_text())
            artifacts[AUTOENCODER_ARTIFACT] = str(ae_folder)
        run_id = run_id or meta.get("mlflow_run_id")
        client = MlflowClient(tracking_uri)
        if not run_id:
            raise ValueError(f"{exported} names no MLflow run (it was not trained with tracking on): pass the run to "
                             "log it into (--mlflow-run-id)")
        client.get_run(run_id)  # a missing run fails here, named by MLflow
        source_commit = client.get_run(run_id).data.tags.get(TAG_COMMIT)
        lineage = lineage_tags(meta, cfg, ae_meta, source_commit, run_id)
        with _global_tracking_uri(tracking_uri):
            info = _log_pyfunc(run_id, artifacts, signature(cfg.model.sampling), lineage)
            result = LoggedAudioModel(info.model_uri, run_id, lineage)
            if register_as:
                result.registered_name, result.version = register_as, _register(tracking_uri, info.model_uri,
                                                                                  register_as, lineage)
        logger.info("%s", result.summary())
        return result
    finally:
        for t in (tmp, ae_tmp):
            if t is not None:
                t.cleanup()


def log_training_export(exported: str | Path, tracking_uri: str, run_id: str,
                        register_as: Optional[str] = None) -> Optional[LoggedAudioModel]:
    """What a training run's driver logs at its end: the export folder as artifacts (exported_model/)
    and, for a diffusion model, the pyfunc model. Never raises: the run has trained, and a tracking
    failure is logged, not fatal. Returns the logged model (None for an autoencoder or on failure)."""
    from sa_train.export import META_FILE
    from sa_train.tracking.mlflow_tracker import RunTracker

    from sa_train.config import from_yaml
    from sa_train.export import CONFIG_FILE

    try:
        RunTracker(tracking_uri, run_id).log_artifact(Path(exported), "exported_model")
        if json.loads((Path(exported) / META_FILE).read_text()).get("stage") != "diffusion":
            return None
        autoencoder = from_yaml((Path(exported) / CONFIG_FILE).read_text()).model.autoencoder
        if autoencoder.kind != "none" and not autoencoder.pretrained:
            # Trained on latents without naming their autoencoder (the launcher warned then): no
            # decoder to package, so no generating model; the export's files are logged above.
            logger.warning("MLflow run %s: no pyfunc model logged, the export names no autoencoder "
                           "(model.autoencoder.pretrained) to decode its latents", run_id)
            return None
        return log_exported_model(exported, tracking_uri, run_id=run_id, register_as=register_as)
    except Exception:  # noqa: BLE001 - the training result stands whatever MLflow answers
        logger.exception("could not log the exported model of MLflow run %s; log it later with "
                         "`sa-train register %s`", run_id, exported)
        return None


@contextmanager
def _global_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """mlflow's log_model, and the registry resolving a logged model, read the tracking URI from
    global state: set it for these calls only."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def _log_pyfunc(run_id: str, artifacts: dict[str, str], model_signature, lineage: dict[str, str]):
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    # The logged model is created in the run's experiment here: left to Model.log, it would go to the
    # active (default) experiment, whose artifact root may be a folder relative to this process.
    client = MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id, tags=lineage)
    with tempfile.TemporaryDirectory() as tmp:
        # The requirements are named, not inferred: inference loads the model in a subprocess.
        return Model.log(
            artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id,
            python_model=AudioGenerationModel(), artifacts=artifacts, signature=model_signature,
            pip_requirements=_requirements(), code_paths=[_package_dir(tmp)],
        )


def _register(tracking_uri: str, model_uri: str, name: str, lineage: dict[str, str]) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="sa_train text-to-audio diffusion models")
    run_id = lineage.get(TAG_SOURCE_RUN)
    model_id = model_uri.split("/", 1)[1] if model_uri.startswith("models:/m-") else None
    source = model_uri
    version = client.create_model_version(name, source, run_id=run_id, tags=lineage, model_id=model_id)
    return str(version.version)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "torchaudio", "transformers", "tokenizers", "safetensors", "omegaconf", "soundfile",
                    "numpy", "scipy", "pyyaml", "pyarrow", "mlflow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def _package_dir(tmp: str) -> str:
    """A copy of the sa_train package without caches, logged with the model (code_paths) so that the
    model loads with the code that logged it, also where sa_train is not installed."""
    import shutil

    import sa_train

    target = Path(tmp) / "sa_train"
    shutil.copytree(Path(sa_train.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)
