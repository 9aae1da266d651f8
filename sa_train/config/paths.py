"""Local paths in a config, made absolute before any Ray worker (which runs in its own folder) reads them."""

from __future__ import annotations

from pathlib import Path


def absolute_local_paths(cfg, workdir: Path) -> None:
    """Relative local paths of the config made absolute against ``workdir``, in place.

    Ray Train workers run in a folder of their own, so a folder such as
    ``model.conditioning.text_encoder.name_or_path: models/tiny/clap`` would not be found there. Only
    paths that exist under ``workdir`` change: a hub id such as ``org/model`` stays as it is.
    """
    def fix(value):
        if not value or "://" in value or Path(value).is_absolute():
            return value
        candidate = workdir / value
        return str(candidate.resolve()) if candidate.exists() else value

    text = cfg.model.conditioning.text_encoder
    text.name_or_path = fix(text.name_or_path)
    cfg.model.autoencoder.pretrained = fix(cfg.model.autoencoder.pretrained)
    cfg.data.latents = fix(cfg.data.latents)
    cfg.data.sources = [fix(source) for source in cfg.data.sources]
    cfg.distributed.deepspeed_config = fix(cfg.distributed.deepspeed_config)
