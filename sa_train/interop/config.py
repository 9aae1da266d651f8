"""stable-audio-tools ``model_config.json`` -> sa_train config overrides.

Only what sa_train reproduces exactly is accepted: autoencoders of type ``dac`` (Stable Audio 1.0)
and ``oobleck`` (Stable Audio Open) with a ``vae`` bottleneck, and the ``adp_cfg_1d`` U-Net with a
T5 or CLAP text conditioner and ``int`` timing conditioners. Everything else raises
:class:`UnsupportedSATModel`, naming the type or option and what is supported. The overrides set
the SAT-compatible choices (attention-norm groups, downsampling padding, context and null masks).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional

from sa_train.config.fields import ConfigError

logger = logging.getLogger(__name__)

AUTOENCODER_TYPES = ("dac", "oobleck")
DIFFUSION_TYPES = ("adp_cfg_1d",)
MODEL_TYPES = ("autoencoder", "diffusion_cond")
TEXT_CONDITIONERS = ("t5", "clap_text")
TIMING_IDS = ("seconds_start", "seconds_total")


class UnsupportedSATModel(ConfigError):
    """A SAT model (or option) that sa_train cannot represent exactly."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UnsupportedSATModel(message)


@dataclass
class AutoencoderPlan:
    """How to import one SAT autoencoder."""

    layout: str  # 'dac' or 'oobleck'
    overrides: list[str]
    encoder_blocks: int
    decoder_blocks: int
    downsampling: int


@dataclass
class DiffusionPlan:
    """How to import a SAT adp_cfg_1d diffusion model."""

    overrides: list[str]
    levels: int
    text_id: str
    timing_ids: tuple[str, str]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def overrides_from(values: dict[str, Any]) -> list[str]:
    """{dotted key: value} -> ["key=value", ...] as the config loader parses them."""
    return [f"{key}={_fmt(value)}" for key, value in values.items()]


def model_type(sat: dict) -> str:
    kind = sat.get("model_type")
    _require(
        kind in MODEL_TYPES,
        f"stable-audio-tools model_type {kind!r} is not supported; supported model types: {', '.join(MODEL_TYPES)}",
    )
    return kind


def _autoencoder_part(sat_ae: dict, part: str) -> tuple[str, dict]:
    spec = sat_ae.get(part) or {}
    kind = spec.get("type")
    _require(
        kind in AUTOENCODER_TYPES,
        f"stable-audio-tools {part} type {kind!r} is not supported; supported autoencoder types: "
        f"{', '.join(AUTOENCODER_TYPES)}",
    )
    return kind, dict(spec.get("config") or {})


def autoencoder_plan(sat_ae: dict, sample_rate: int, sample_size: Optional[int]) -> AutoencoderPlan:
    """``sat_ae``: the ``model`` section of an autoencoder config (or a pretransform's ``config``)."""
    enc_kind, enc = _autoencoder_part(sat_ae, "encoder")
    dec_kind, dec = _autoencoder_part(sat_ae, "decoder")
    _require(enc_kind == dec_kind, f"encoder type {enc_kind!r} with decoder type {dec_kind!r} is not supported; "
             "both must be dac or both oobleck")
    bottleneck = (sat_ae.get("bottleneck") or {}).get("type")
    _require(bottleneck == "vae", f"autoencoder bottleneck type {bottleneck!r} is not supported; supported: vae")
    _require(not sat_ae.get("pretransform"), "an autoencoder with its own pretransform is not supported")
    latent = int(sat_ae["latent_dim"])
    io_channels = int(sat_ae.get("io_channels", 2))
    if enc_kind == "dac":
        strides = list(enc.get("strides", [2, 4, 8, 8]))
        in_channels = int(enc.get("in_channels", 1))
        _require(enc.get("latent_dim") == 2 * latent,
                 f"dac encoder latent_dim {enc.get('latent_dim')} must be 2 x latent_dim ({2 * latent}) for a vae")
        _require(list(dec.get("rates", [])) == strides[::-1],
                 f"dac decoder rates {dec.get('rates')} must be the encoder strides reversed ({strides[::-1]})")
        _require(int(dec.get("latent_dim", -1)) == latent, f"dac decoder latent_dim must be {latent}")
        out_channels = int(dec.get("out_channels", 1))
        values = {
            "encoder_width": int(enc.get("d_model", 64)),
            "decoder_width": int(dec["channels"]),
            "use_snake": True,
            "final_tanh": True,
        }
    else:
        strides = list(enc.get("strides", [2, 4, 8, 8]))
        mults = list(enc.get("c_mults", [1, 2, 4, 8]))
        in_channels = int(enc.get("in_channels", 2))
        out_channels = int(dec.get("out_channels", 2))
        for key in ("channels", "c_mults", "strides", "use_snake"):
            _require(dec.get(key, enc.get(key)) == enc.get(key),
                     f"oobleck decoder {key} {dec.get(key)!r} must equal the encoder's {enc.get(key)!r}")
        _require(int(enc.get("latent_dim", 32)) == 2 * latent, f"oobleck encoder latent_dim must be {2 * latent}")
        _require(int(dec.get("latent_dim", 32)) == latent, f"oobleck decoder latent_dim must be {latent}")
        for key in ("antialias_activation", "use_nearest_upsample"):
            _require(not enc.get(key) and not dec.get(key), f"oobleck {key}=true is not supported")
        _require(len(mults) == len(strides), f"oobleck c_mults {mults} and strides {strides} need the same length")
        values = {
            "encoder_width": int(enc.get("channels", 128)),
            "decoder_width": int(enc.get("channels", 128)),
            "channel_multipliers": [1] + mults,
            "layout": "oobleck",
            "use_snake": bool(enc.get("use_snake", False)),
            "snake_beta": bool(enc.get("use_snake", False)),
            "final_tanh": bool(dec.get("final_tanh", True)),
        }
        _require(all(s % 2 == 0 for s in strides), f"oobleck strides {strides} must be even (SAT's odd-stride "
                 "decoder does not restore the length)")
    _require(in_channels == out_channels == io_channels,
             f"audio channels differ: encoder in {in_channels}, decoder out {out_channels}, io_channels {io_channels}")
    downsampling = math.prod(strides)
    ratio = sat_ae.get("downsampling_ratio", downsampling)
    _require(ratio == downsampling, f"downsampling_ratio {ratio} is not the product of the strides ({downsampling})")
    values = {
        "model.autoencoder.kind": "vae",
        "model.autoencoder.audio_channels": io_channels,
        "model.autoencoder.latent_channels": latent,
        "model.autoencoder.strides": strides,
        **{f"model.autoencoder.{k}": v for k, v in values.items()},
        "model.unet.in_channels": latent,
        "data.sample_rate": int(sample_rate),
        "data.channels": io_channels,
    }
    values["data.window_samples"] = window_samples(sample_size, downsampling)
    return AutoencoderPlan(enc_kind, overrides_from(values), len(strides), len(strides), downsampling)


def window_samples(sample_size: Optional[int], multiple: int, default: int = 131072) -> int:
    """SAT's sample_size when it is a multiple of ``multiple``, else the smallest multiple >= the default."""
    if sample_size and sample_size % multiple == 0:
        return int(sample_size)
    return -(-max(default, multiple) // multiple) * multiple


def _conditioners(sat_model: dict) -> tuple[int, dict[str, dict]]:
    conditioning = sat_model.get("conditioning") or {}
    return int(conditioning.get("cond_dim", 0)), {c["id"]: c for c in conditioning.get("configs", [])}


def diffusion_plan(sat_model: dict) -> DiffusionPlan:
    """``sat_model``: the ``model`` section of a diffusion_cond config."""
    diffusion = sat_model.get("diffusion") or {}
    kind = diffusion.get("type")
    _require(
        kind in DIFFUSION_TYPES,
        f"stable-audio-tools diffusion type {kind!r} is not supported; supported diffusion types: "
        f"{', '.join(DIFFUSION_TYPES)} (the DiT of Stable Audio Open has no sa_train counterpart; "
        "its autoencoder can still be imported with --part autoencoder)",
    )
    objective = diffusion.get("diffusion_objective", "v")
    _require(objective == "v", f"diffusion_objective {objective!r} is not supported; supported: v")
    c = dict(diffusion.get("config") or {})
    unsupported = {
        "patch_size": 1, "use_stft": False, "use_nearest_upsample": False, "kernel_multiplier_downsample": 2,
        "use_skip_scale": True, "use_context_time": True, "use_xattn_time": False,
    }
    for key, needed in unsupported.items():
        _require(c.get(key, needed) == needed, f"adp_cfg_1d option {key}={c.get(key)!r} is not supported ({needed})")
    _require(not c.get("context_channels") and not diffusion.get("input_concat_ids"),
             "adp_cfg_1d input-concatenated conditioning (context_channels, input_concat_ids) is not supported")
    _require(c.get("out_channels", c["in_channels"]) == c["in_channels"], "adp_cfg_1d out_channels != in_channels")
    multipliers, factors = list(c["multipliers"]), list(c["factors"])
    levels = len(factors)
    attentions = list(c["attentions"])
    _require(len(attentions) == levels + 1, f"adp_cfg_1d attentions {attentions} needs {levels + 1} entries")
    blocks = set(c["num_blocks"])
    _require(len(blocks) == 1, f"adp_cfg_1d num_blocks {c['num_blocks']} must be equal at every level")
    channels = int(c["channels"])
    heads = c.get("attention_heads")
    if heads is None:
        features = c.get("attention_features")
        counts = {channels * multipliers[i + 1] // features for i in range(levels) if attentions[i]}
        counts |= {channels * multipliers[-1] // features} if attentions[-1] else set()
        _require(features is not None and len(counts) <= 1,
                 "adp_cfg_1d needs attention_heads (or attention_features giving one head count at every level)")
        heads = counts.pop() if counts else 1

    cond_dim, conditioners = _conditioners(sat_model)
    cross = list(diffusion.get("cross_attention_cond_ids", []))
    _require(len(cross) == 3 and tuple(cross[1:]) == TIMING_IDS,
             f"cross_attention_cond_ids {cross} is not supported; supported: [<text id>, seconds_start, seconds_total]")
    text_id = cross[0]
    text = conditioners.get(text_id, {})
    _require(text.get("type") in TEXT_CONDITIONERS,
             f"conditioner {text_id!r} of type {text.get('type')!r} is not supported; supported text conditioners: "
             f"{', '.join(TEXT_CONDITIONERS)}")
    tc = dict(text.get("config") or {})
    _require(tc.get("padding_mode", "zero") == "zero", "text conditioner padding_mode other than 'zero' is not supported")
    values: dict[str, Any] = {}
    if text["type"] == "t5":
        max_length = int(tc.get("max_length", 128))
        values.update({
            "model.conditioning.text_encoder.kind": "t5",
            "model.conditioning.text_encoder.name_or_path": tc.get("model_path") or tc.get("t5_model_name", "t5-base"),
            "model.conditioning.text_encoder.layer": -1,  # SAT takes T5's last_hidden_state (after the final norm)
        })
    else:
        max_length = 77
        logger.warning(
            "conditioner %r: stable-audio-tools' CLAP checkpoint (clap_ckpt_path=%s) is in laion_clap's format, "
            "which sa_train does not read; the imported config uses the public LAION CLAP from the hub "
            "(text_encoder.kind=clap_laion). To use your CLAP, convert it to a Hugging Face ClapModel folder and "
            "pass --set model.conditioning.text_encoder.kind=clap --set model.conditioning.text_encoder.name_or_path=DIR",
            text_id, tc.get("clap_ckpt_path"),
        )
        values.update({
            "model.conditioning.text_encoder.kind": "clap_laion",
            "model.conditioning.text_encoder.layer": int(tc.get("feature_layer_ix", -1)),
        })
    _require(not tc.get("project_out"), "text conditioner project_out=true is not supported")
    values["model.conditioning.text_encoder.max_length"] = max_length

    timing = [conditioners.get(i, {}) for i in TIMING_IDS]
    _require(all(t.get("type") == "int" for t in timing),
             f"timing conditioners of types {[t.get('type') for t in timing]} are not supported; supported: int")
    bounds = {(int(t["config"].get("min_val", 0)), int(t["config"].get("max_val", 512))) for t in timing}
    _require(len(bounds) == 1 and next(iter(bounds))[0] == 0,
             f"int timing conditioners need min_val 0 and one max_val for both, got {sorted(bounds)}")
    global_ids = list(diffusion.get("global_cond_ids", []))
    # SAT keeps the global vector in its CFG null (training dropout and guidance); sa_train zeroes it.
    _require(not global_ids, f"global_cond_ids {global_ids} is not supported (stable-audio-tools keeps global "
             "conditioning in its classifier-free-guidance null, sa_train zeroes it); supported: none")

    length = int(c["context_embedding_max_length"])
    _require(length == max_length + 2,
             f"context_embedding_max_length {length} must be the text length {max_length} + 2 timing tokens")
    _require(int(c["context_embedding_features"]) == cond_dim, "context_embedding_features must equal cond_dim")
    values.update({
        "model.conditioning.timing.kind": "per_second",
        "model.conditioning.timing.max_seconds": next(iter(bounds))[1],
        "model.conditioning.timing.global_condition": False,
        "model.unet.in_channels": int(c["in_channels"]),
        "model.unet.base_width": channels,
        "model.unet.multipliers": multipliers,
        "model.unet.factors": factors,
        "model.unet.resnet_blocks": blocks.pop(),
        "model.unet.attention_blocks": attentions,
        "model.unet.num_heads": int(heads),
        "model.unet.context_width": cond_dim,
        "model.unet.feedforward_multiplier": int(c["attention_multiplier"]),
        "model.unet.time_embedding_width": channels,
        "model.unet.modulation_width": channels * int(c.get("context_features_multiplier", 4)),
        "model.unet.norm_groups": int(c.get("resnet_groups", 8)),
        "model.unet.attention_norm_groups": 32,
        "model.unet.downsample_padding": "sat",
        "model.unet.context_mask": "zero_kv",
        "model.diffusion.null_embedding": "learned",
        "model.diffusion.null_mask": "prompt",
        "training.stage": "diffusion",
    })
    _require(c.get("context_features") is None, "adp_cfg_1d context_features (global conditioning) is not supported")
    return DiffusionPlan(overrides_from(values), levels, text_id, TIMING_IDS)


def training_overrides(sat: dict, stage: str) -> list[str]:
    """What SAT's training section says that sa_train keeps (KL weight, CFG dropout)."""
    training = sat.get("training") or {}
    values: dict[str, Any] = {}
    if stage == "autoencoder":
        kl = (((training.get("loss_configs") or {}).get("bottleneck") or {}).get("weights") or {}).get("kl")
        if kl is not None:
            # sa_train's KL has the textbook 0.5 factor that SAT's lacks: twice the weight, the same penalty.
            values["model.autoencoder.losses.kl_weight"] = 2 * float(kl)
    elif "cfg_dropout_prob" in training:
        values["model.diffusion.cfg_dropout"] = float(training["cfg_dropout_prob"])
    return overrides_from(values)
