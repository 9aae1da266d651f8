"""Config of experiment tracking (section ``tracking``), owned by this package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from sa_train.config.fields import param


@dataclass
class TrackingConfig:
    """MLflow tracking: where runs are stored and what they are called."""

    uri: Optional[str] = param(
        None, "MLflow tracking URI; default sqlite:///<absolute working folder>/mlflow.db (a server URL on clusters)"
    )
    experiment: str = param("sa_train", "MLflow experiment name")
    run_name: Optional[str] = param(None, "run name; default <stage>-<timestamp> (unique per run)")
    tags: Dict[str, str] = param({}, "extra tags on the MLflow run")
    enabled: bool = param(True, "log to MLflow at all")
