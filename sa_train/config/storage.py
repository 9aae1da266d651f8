"""Config of where runs and checkpoints are stored (section ``storage``), owned by this module."""

from __future__ import annotations

from dataclasses import dataclass

from sa_train.config.fields import param


@dataclass
class StorageConfig:
    """Where Ray Train keeps runs and checkpoints."""

    path: str = param(
        "runs", "local folder (made absolute) or s3:// / gs:// URI for runs; multi-node runs need shared storage"
    )
    shared_filesystem: bool = param(
        False, "a local storage.path is a folder every node mounts at the same path (NFS, EFS): allowed multi-node"
    )
