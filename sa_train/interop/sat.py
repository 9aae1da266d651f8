"""`sa-train import-sat`: a stable-audio-tools checkpoint + model_config.json -> sa_train exports.

    autoencoder checkpoint           -> OUT                 (an exported autoencoder)
    text-to-audio checkpoint, --part all          -> OUT/autoencoder and OUT/diffusion
                              --part autoencoder  -> OUT    (its pretransform alone)
                              --part diffusion    -> OUT    (needs model.autoencoder.pretrained=...)

Every tensor is mapped by name (sa_train.interop.keys) against an sa_train model built from the
translated config on the meta device (no memory, no download); a missing, unused or misshapen
tensor stops the import with its name. The exports then load with ``load_exported`` like any other.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import save_file

from sa_train.config import ExperimentConfig, load_config, to_yaml
from sa_train.interop import config as satcfg
from sa_train.interop.checkpoint import SATCheckpoint, Weights, read_sat_checkpoint, strip_prefix
from sa_train.interop.keys import Source, conditioner_source, dac_source, gather, oobleck_source, unet_source

logger = logging.getLogger(__name__)

PARTS = ("all", "autoencoder", "diffusion")
PRETRANSFORM = "pretransform.model."
UNET = "model.model."


def _meta_state(module_factory) -> dict[str, torch.Size]:
    """Parameter names and shapes of a model built on the meta device (no memory is allocated)."""
    with torch.device("meta"):
        model = module_factory()
    return {key: value.shape for key, value in model.state_dict().items()}


def _check_shapes(weights: Weights, expected: dict[str, torch.Size], where: str) -> None:
    wrong = [f"{k} {tuple(weights[k].shape)} != {tuple(s)}" for k, s in expected.items() if weights[k].shape != s]
    if wrong:
        raise ValueError(f"{where} tensors have the wrong shape for the config ({len(wrong)}): {', '.join(wrong[:6])}")


def autoencoder_sources(cfg: ExperimentConfig, plan: satcfg.AutoencoderPlan) -> tuple[dict[str, Source], dict]:
    from sa_train.models.autoencoder.vae import AutoencoderVAE

    shapes = _meta_state(lambda: AutoencoderVAE(cfg.model.autoencoder))
    source = dac_source if plan.layout == "dac" else oobleck_source
    return {k: source(k, plan.encoder_blocks, plan.decoder_blocks) for k in shapes}, shapes


def diffusion_sources(cfg: ExperimentConfig, plan: satcfg.DiffusionPlan,
                      projection: Optional[tuple[torch.Size, torch.Size]]) -> tuple[dict[str, Source], dict]:
    """Sources of DiffusionModel's trainable tensors: the U-Net, the text projection (``projection``:
    its weight and bias shapes, when there is one), the timing tables and the learned null sequence."""
    from sa_train.models.unet.unet import UNet1D

    width = cfg.model.unet.context_width
    timing = cfg.model.conditioning.timing
    unet = _meta_state(lambda: UNet1D(cfg.model.unet, global_cond_width=2 * width if timing.global_condition else None))
    shapes = {f"unet.{k}": s for k, s in unet.items()}
    sources = {f"unet.{k}": Source(UNET + unet_source(k, plan.levels).key) for k in unet}
    conditioner_keys = {
        "timing.start.table.weight": torch.Size([timing.max_seconds + 1, width]),
        "timing.total.table.weight": torch.Size([timing.max_seconds + 1, width]),
        "null_context": torch.Size([cfg.model.conditioning.text_encoder.max_length + 2, width]),
    }
    if projection is not None:
        conditioner_keys["text_encoder.projection.weight"], conditioner_keys["text_encoder.projection.bias"] = projection
    for key, shape in conditioner_keys.items():
        shapes[f"conditioner.{key}"] = shape
        sources[f"conditioner.{key}"] = conditioner_source(key, plan.text_id, *plan.timing_ids)
    return sources, shapes


def _write_export(out: Path, cfg: ExperimentConfig, stage: str, raw: Weights, ema: Optional[Weights],
                  ckpt: SATCheckpoint, sat_type: str) -> Path:
    from sa_train.export import EXPORT_FORMAT, META_FILE, MODEL_FILE, model_identity
    from sa_train.training.checkpoint import CONFIG_FILE, EMA_FILE

    out.mkdir(parents=True, exist_ok=True)
    config_yaml = to_yaml(cfg)
    save_file({k: v.contiguous() for k, v in raw.items()}, str(out / MODEL_FILE))
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.items()}, str(out / EMA_FILE))
    elif (out / EMA_FILE).exists():
        (out / EMA_FILE).unlink()  # a stale EMA from an earlier export would be loaded instead
    (out / CONFIG_FILE).write_text(config_yaml)
    meta = {
        "format": EXPORT_FORMAT,
        "stage": stage,
        "step": ckpt.step,
        "samples_seen": 0,
        "source_checkpoint": str(ckpt.path),
        "identity": model_identity(out / MODEL_FILE, config_yaml),
        "has_ema": ema is not None,
        "imported_from": f"stable-audio-tools ({sat_type})",
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    logger.info("wrote the %s model (%s, %d tensors) to %s", stage, sat_type, len(raw), out)
    return out


def _convert(sources: dict[str, Source], shapes: dict, ckpt: SATCheckpoint, select, where: str):
    raw = gather(sources, select(ckpt.raw), where)
    _check_shapes(raw, shapes, where)
    ema = None
    if ckpt.ema is not None:
        ema = gather(sources, select(ckpt.ema), where + " (EMA)")
    return raw, ema


def _diffusion_weights(weights: Weights) -> Weights:
    """The U-Net and conditioner tensors of a text-to-audio model (not its pretransform)."""
    return {k: v for k, v in weights.items() if k.startswith((UNET, "conditioner."))}


def import_sat(checkpoint: str | Path, config: str | Path, out: str | Path, part: str = "all",
               overrides: Sequence[str] = ()) -> list[Path]:
    """Import a SAT checkpoint with its model config into sa_train exports; returns the folders written.

    ``overrides`` (dotted key=value) apply on top of the translated config, e.g. to point the text
    encoder at a local copy. Everything is checked before anything is written."""
    if part not in PARTS:
        raise ValueError(f"--part {part!r} is unknown; choose one of {', '.join(PARTS)}")
    config_path = Path(config)
    try:
        sat = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the stable-audio-tools model config {config_path}: {err}") from None
    kind = satcfg.model_type(sat)
    model = sat.get("model") or {}
    sample_rate, sample_size = sat.get("sample_rate", 44100), sat.get("sample_size")
    out = Path(out)

    if kind == "autoencoder":
        if part == "diffusion":
            raise ValueError(f"{config_path} describes an autoencoder; it has no diffusion part to import")
        ae_model, ae_prefix = model, ""
    else:
        pretransform = model.get("pretransform") or {}
        if part != "diffusion":
            satcfg._require(pretransform.get("type") == "autoencoder",
                            f"pretransform type {pretransform.get('type')!r} is not supported; supported: autoencoder")
            scale = pretransform.get("config", {}).get("scale", pretransform.get("scale", 1.0))
            satcfg._require(scale == 1.0, f"pretransform scale {scale} is not supported (sa_train latents are unscaled)")
        ae_model, ae_prefix = pretransform.get("config") or {}, PRETRANSFORM

    # Plan and configure everything (refusing what is unsupported) before reading the checkpoint,
    # and convert every tensor before writing anything.
    ae_plan = satcfg.autoencoder_plan(ae_model, sample_rate, sample_size) if part != "diffusion" or ae_model else None
    diff_plan = satcfg.diffusion_plan(model) if kind == "diffusion_cond" and part != "autoencoder" else None
    ae_out = out / "autoencoder" if diff_plan is not None else out
    diff_out = out / "diffusion" if part == "all" else out
    ae_cfg = diff_cfg = None
    if ae_plan is not None and part != "diffusion":
        ae_cfg = load_config(None, [*ae_plan.overrides, "training.stage=autoencoder",
                                    *satcfg.training_overrides(sat, "autoencoder"), *overrides])
    if diff_plan is not None:
        values = list(ae_plan.overrides) if ae_plan is not None else []
        if ae_cfg is not None:
            values.append(f"model.autoencoder.pretrained={ae_out.resolve()}")
        values += diff_plan.overrides + satcfg.training_overrides(sat, "diffusion")
        total = math.prod(int(f) for f in model["diffusion"]["config"]["factors"])
        total *= ae_plan.downsampling if ae_plan is not None else 1
        values.append(f"data.window_samples={satcfg.window_samples(sample_size, total)}")
        diff_cfg = load_config(None, [*values, *overrides])

    ckpt = read_sat_checkpoint(checkpoint)
    exports = []
    if ae_cfg is not None:
        sources, shapes = autoencoder_sources(ae_cfg, ae_plan)
        select = (lambda w: strip_prefix(w, ae_prefix)) if ae_prefix else (lambda w: w)
        exports.append((ae_out, ae_cfg, "autoencoder", *_convert(sources, shapes, ckpt, select, "autoencoder"),
                        ae_plan.layout))
    if diff_cfg is not None:
        # SAT projects the text features when their width differs from cond_dim, as sa_train does.
        text = f"conditioner.conditioners.{diff_plan.text_id}.proj_out."
        projection = (ckpt.raw[text + "weight"].shape, ckpt.raw[text + "bias"].shape) if text + "weight" in ckpt.raw else None
        sources, shapes = diffusion_sources(diff_cfg, diff_plan, projection)
        exports.append((diff_out, diff_cfg, "diffusion", *_convert(sources, shapes, ckpt, _diffusion_weights, "diffusion"),
                        "adp_cfg_1d"))
    written = [_write_export(folder, cfg, stage, raw, ema, ckpt, sat_type)
               for folder, cfg, stage, raw, ema, sat_type in exports]
    return written
