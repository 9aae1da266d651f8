"""`sa-train register EXPORTED --name NAME`: an exported diffusion model as an MLflow model in the
model registry, loadable with `mlflow.pyfunc.load_model("models:/NAME/VERSION")`, with lineage tags
(sa_train.tracking.mlflow_model)."""

from __future__ import annotations

import argparse
import sys


def add_mlflow_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mlflow-run-id", help="MLflow run to log the model into (default: the run that trained it, "
                        "named in the export's meta.json)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<working folder>/mlflow.db)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "register", help="log an exported diffusion model as an MLflow model and register it",
        description="Logs EXPORTED (a folder or s3:// / gs:// URI written by `sa-train export`) with its "
        "autoencoder as an MLflow pyfunc model that generates audio from prompts and seconds_total, and registers "
        "a version of NAME tagged with the model's and its autoencoder's identities, a hash of the training data "
        "manifest and the git commit of the training code.",
    )
    parser.add_argument("exported", help="exported diffusion model (folder or URI)")
    parser.add_argument("--name", help="registered model name; without it the model is logged but not registered")
    add_mlflow_arguments(parser)
    parser.set_defaults(func=run)


def log_and_register(exported: str, name: str | None, run_id: str | None, tracking_uri: str | None) -> int:
    from sa_train.tracking.config import TrackingConfig
    from sa_train.tracking.mlflow_model import log_exported_model
    from sa_train.tracking.mlflow_tracker import resolve_tracking_uri

    uri = resolve_tracking_uri(TrackingConfig(uri=tracking_uri))
    try:
        logged = log_exported_model(exported, uri, run_id=run_id, register_as=name)
    except ValueError as err:
        print(f"sa-train: {err}", file=sys.stderr)
        return 2
    print(logged.summary())
    return 0


def run(args: argparse.Namespace) -> int:
    return log_and_register(args.exported, args.name, args.mlflow_run_id, args.tracking_uri)
