"""`sa-train export RUN --format sat`: an sa_train model as a stable-audio-tools checkpoint.

    <out>/model_config.json    SAT's model config (model_type autoencoder or diffusion_cond)
    <out>/model.safetensors    SAT's parameter names; a diffusion model carries its autoencoder as
                               the pretransform (from model.autoencoder.pretrained)

SAT loads it with ``create_model_from_config`` and ``load_ckpt_state_dict``. Only models that SAT
can compute exactly are written: the config must use SAT's choices wherever sa_train offers
another (model.unet.context_mask=zero_kv, ...); a model that does not is refused with the key to set.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from sa_train.config import ExperimentConfig, from_yaml
from sa_train.interop.config import TIMING_IDS, AutoencoderPlan, DiffusionPlan, UnsupportedSATModel
from sa_train.interop.keys import scatter

logger = logging.getLogger(__name__)

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_ID = "prompt"
# T5 names that SAT's T5Conditioner accepts (it takes the width from its own table of these).
SAT_T5_NAMES = ("t5-small", "t5-base", "t5-large", "t5-3b", "t5-11b", "google/flan-t5-small",
                "google/flan-t5-base", "google/flan-t5-large", "google/flan-t5-xl", "google/flan-t5-xxl",
                "google/t5-v1_1-xl", "google/t5-v1_1-xxl")


def _require(condition: bool, key: str, needed: str) -> None:
    if not condition:
        raise UnsupportedSATModel(f"stable-audio-tools cannot compute this model: {key} must be {needed} "
                                  "(sa_train's choice there has no stable-audio-tools counterpart)")


def autoencoder_section(cfg: ExperimentConfig) -> dict:
    """The ``model`` section of SAT's autoencoder config for ``model.autoencoder``."""
    ae = cfg.model.autoencoder
    _require(ae.kind == "vae", "model.autoencoder.kind", "vae")
    channels, latent, strides = ae.audio_channels, ae.latent_channels, list(ae.strides)
    if ae.layout == "dac":
        _require(not ae.channel_multipliers, "model.autoencoder.channel_multipliers", "[] with layout dac")
        _require(ae.use_snake and not ae.snake_beta, "model.autoencoder.use_snake / snake_beta", "true / false (dac)")
        _require(ae.final_tanh, "model.autoencoder.final_tanh", "true with layout dac")
        encoder = {"type": "dac", "config": {"in_channels": channels, "latent_dim": 2 * latent,
                                             "d_model": ae.encoder_width, "strides": strides}}
        decoder = {"type": "dac", "config": {"latent_dim": latent, "out_channels": channels,
                                             "rates": strides[::-1], "channels": ae.decoder_width}}
    else:
        mults = list(ae.channel_multipliers) or [2**i for i in range(len(strides) + 1)]
        _require(mults[0] == 1, "model.autoencoder.channel_multipliers", "a list starting with 1 (oobleck)")
        _require(ae.decoder_width == ae.encoder_width, "model.autoencoder.decoder_width", "encoder_width (oobleck)")
        _require(ae.snake_beta == ae.use_snake, "model.autoencoder.snake_beta", "use_snake (oobleck: SnakeBeta or ELU)")
        _require(all(s % 2 == 0 for s in strides), "model.autoencoder.strides", "even (oobleck)")
        common = {"channels": ae.encoder_width, "c_mults": mults[1:], "strides": strides, "use_snake": ae.use_snake}
        encoder = {"type": "oobleck", "config": {"in_channels": channels, "latent_dim": 2 * latent, **common}}
        decoder = {"type": "oobleck", "config": {"out_channels": channels, "latent_dim": latent,
                                                 "final_tanh": ae.final_tanh, **common}}
    return {"encoder": encoder, "decoder": decoder, "bottleneck": {"type": "vae"}, "latent_dim": latent,
            "downsampling_ratio": math.prod(strides), "io_channels": channels}


def diffusion_section(cfg: ExperimentConfig) -> dict:
    """The ``model`` section of SAT's diffusion_cond config (without the pretransform)."""
    unet, cond, diffusion = cfg.model.unet, cfg.model.conditioning, cfg.model.diffusion
    text, timing = cond.text_encoder, cond.timing
    groups = unet.attention_norm_groups or unet.norm_groups
    _require(groups == 32, "model.unet.attention_norm_groups", "32")
    _require(unet.downsample_padding == "sat" or max(unet.factors) <= 2, "model.unet.downsample_padding", "sat")
    _require(unet.context_mask == "zero_kv", "model.unet.context_mask", "zero_kv")
    _require(unet.positional_encoding == "none", "model.unet.positional_encoding", "none")
    _require(unet.time_embedding_width == unet.base_width, "model.unet.time_embedding_width", "model.unet.base_width")
    _require(unet.modulation_width % unet.base_width == 0, "model.unet.modulation_width", "a multiple of base_width")
    _require(diffusion.null_embedding == "learned", "model.diffusion.null_embedding", "learned")
    _require(diffusion.null_mask == "prompt", "model.diffusion.null_mask", "prompt")
    _require(timing.kind == "per_second", "model.conditioning.timing.kind", "per_second")
    _require(not timing.global_condition, "model.conditioning.timing.global_condition",
             "false (SAT keeps global conditioning in its guidance null)")
    _require(text.kind == "t5" and text.name_or_path in (None, *SAT_T5_NAMES), "model.conditioning.text_encoder",
             f"kind t5 with name_or_path one of {', '.join(SAT_T5_NAMES)}")
    _require(text.layer == -1, "model.conditioning.text_encoder.layer", "-1 (SAT takes T5's last hidden state)")
    levels = len(unet.factors)
    config = {
        "in_channels": unet.in_channels, "context_embedding_features": unet.context_width,
        "context_embedding_max_length": text.max_length + 2, "channels": unet.base_width,
        "resnet_groups": unet.norm_groups, "kernel_multiplier_downsample": 2, "multipliers": list(unet.multipliers),
        "factors": list(unet.factors), "num_blocks": [unet.resnet_blocks] * levels,
        "attentions": list(unet.attention_blocks), "attention_heads": unet.num_heads,
        "attention_multiplier": unet.feedforward_multiplier, "use_nearest_upsample": False, "use_skip_scale": True,
        "use_context_time": True, "context_features_multiplier": unet.modulation_width // unet.base_width,
    }
    diffusion_cfg = {"type": "adp_cfg_1d", "cross_attention_cond_ids": [TEXT_ID, *TIMING_IDS], "config": config}
    bounds = {"min_val": 0, "max_val": timing.max_seconds}
    return {
        "conditioning": {"cond_dim": unet.context_width, "configs": [
            {"id": TEXT_ID, "type": "t5", "config": {"t5_model_name": text.name_or_path or "t5-base",
                                                       "max_length": text.max_length}},
            *({"id": i, "type": "int", "config": bounds} for i in TIMING_IDS),
        ]},
        "diffusion": diffusion_cfg,
        "io_channels": unet.in_channels,
    }


def _read_export(folder: Path, weights: str) -> tuple[ExperimentConfig, dict, dict]:
    from sa_train.export import META_FILE, MODEL_FILE
    from sa_train.training.checkpoint import CONFIG_FILE as SA_CONFIG, EMA_FILE

    meta = json.loads((folder / META_FILE).read_text())
    cfg = from_yaml((folder / SA_CONFIG).read_text())
    use_ema = weights == "ema" and (folder / EMA_FILE).exists()
    return cfg, meta, load_file(str(folder / (EMA_FILE if use_ema else MODEL_FILE)))


def _autoencoder_weights(cfg: ExperimentConfig, weights: dict) -> dict:
    from sa_train.interop.sat import autoencoder_sources

    blocks = len(cfg.model.autoencoder.strides)
    plan = AutoencoderPlan(cfg.model.autoencoder.layout, [], blocks, blocks, cfg.model.autoencoder.downsampling)
    return scatter(autoencoder_sources(cfg, plan)[0], weights)


def _write(folder: Path, out: Path, weights: str) -> Path:
    from sa_train.interop.sat import diffusion_sources

    cfg, meta, tensors = _read_export(folder, weights)
    sat: dict = {"sample_rate": cfg.data.sample_rate, "sample_size": cfg.data.window_samples,
                 "audio_channels": cfg.data.channels}
    if meta["stage"] == "autoencoder":
        sat.update({"model_type": "autoencoder", "model": autoencoder_section(cfg)})
        state = _autoencoder_weights(cfg, tensors)
    else:
        model = diffusion_section(cfg)
        projection = None
        if "conditioner.text_encoder.projection.weight" in tensors:
            projection = (tensors["conditioner.text_encoder.projection.weight"].shape,
                          tensors["conditioner.text_encoder.projection.bias"].shape)
        plan = DiffusionPlan([], len(cfg.model.unet.factors), TEXT_ID, TIMING_IDS)
        state = scatter(diffusion_sources(cfg, plan, projection)[0], tensors)
        pretrained = cfg.model.autoencoder.pretrained
        if cfg.model.autoencoder.kind == "vae":
            if pretrained is None:
                raise ValueError("the diffusion model has no model.autoencoder.pretrained; stable-audio-tools needs "
                                 "its autoencoder as the pretransform: set it with the exported autoencoder folder")
            ae_cfg, _, ae_tensors = _read_export(Path(pretrained), weights)
            model["pretransform"] = {"type": "autoencoder", "iterate_batch": True, "config": autoencoder_section(ae_cfg)}
            state.update({f"pretransform.model.{k}": v for k, v in _autoencoder_weights(ae_cfg, ae_tensors).items()})
        sat.update({"model_type": "diffusion_cond", "model": model})
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(sat, indent=2))
    logger.info("wrote the %s model as a stable-audio-tools checkpoint (%d tensors) to %s", meta["stage"], len(state), out)
    return out


def export_sat(source: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write ``source`` (an exported folder, a run folder or a checkpoint) in SAT's format into ``out``.

    ``weights``: 'ema' (when present, else raw) or 'raw'."""
    from sa_train.export import META_FILE, export_checkpoint

    source, out = Path(source), Path(out)
    if (source / META_FILE).exists():
        return _write(source, out, weights)
    with tempfile.TemporaryDirectory(prefix="sa_train_sat_") as tmp:
        return _write(export_checkpoint(source, tmp), out, weights)
