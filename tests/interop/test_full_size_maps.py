"""At the published sizes (Stable Audio 1.0's VAE and U-Net, Stable Audio Open's VAE), every tensor of
SAT's model has exactly one sa_train counterpart of the same shape. Both sides are built on the
meta device: no memory, no weights, seconds."""

from __future__ import annotations

import pytest
import torch

from sa_train.config import load_config
from sa_train.interop import config as satcfg
from sa_train.interop import sat as satimport

pytestmark = pytest.mark.interop

SA1_VAE = {
    "encoder": {"type": "dac", "config": {"in_channels": 2, "latent_dim": 128, "d_model": 128, "strides": [4, 4, 8, 8]}},
    "decoder": {"type": "dac", "config": {"latent_dim": 64, "out_channels": 2, "rates": [8, 8, 4, 4], "channels": 1536}},
    "bottleneck": {"type": "vae"}, "latent_dim": 64, "downsampling_ratio": 1024, "io_channels": 2,
}
SAO_VAE = {
    "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                              "strides": [2, 4, 4, 8, 8], "latent_dim": 128, "use_snake": True}},
    "decoder": {"type": "oobleck", "config": {"out_channels": 2, "channels": 128, "c_mults": [1, 2, 4, 8, 16],
                                              "strides": [2, 4, 4, 8, 8], "latent_dim": 64, "use_snake": True,
                                              "final_tanh": False}},
    "bottleneck": {"type": "vae"}, "latent_dim": 64, "downsampling_ratio": 2048, "io_channels": 2,
}
SA1_MODEL = {
    "conditioning": {"cond_dim": 768, "configs": [
        {"id": "prompt", "type": "clap_text", "config": {"audio_model_type": "HTSAT-base", "enable_fusion": True,
                                                          "clap_ckpt_path": "clap.ckpt", "use_text_features": True,
                                                          "feature_layer_ix": -2}},
        {"id": "seconds_start", "type": "int", "config": {"min_val": 0, "max_val": 512}},
        {"id": "seconds_total", "type": "int", "config": {"min_val": 0, "max_val": 512}},
    ]},
    "diffusion": {"type": "adp_cfg_1d", "cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                  "config": {"in_channels": 64, "context_embedding_features": 768, "context_embedding_max_length": 79,
                             "channels": 256, "resnet_groups": 16, "kernel_multiplier_downsample": 2,
                             "multipliers": [4, 4, 4, 5, 5], "factors": [1, 2, 2, 4], "num_blocks": [2, 2, 2, 2],
                             "attentions": [1, 3, 3, 3, 3], "attention_heads": 16, "attention_multiplier": 4,
                             "use_nearest_upsample": False, "use_skip_scale": True, "use_context_time": True}},
    "io_channels": 64,
}


def meta_shapes(factory) -> dict[str, torch.Size]:
    with torch.device("meta"):
        module = factory()
    return {key: value.shape for key, value in module.state_dict().items()}


def assert_one_to_one(sources, shapes, sat_shapes, prefix: str = "") -> int:
    assert {prefix + s.key for s in sources.values()} == set(sat_shapes)
    for key, source in sources.items():
        if source.transform is None:
            assert shapes[key] == sat_shapes[prefix + source.key], key
    return sum(s.numel() for s in sat_shapes.values())


# Tensor elements of SAT's state dict, weight-norm magnitudes included.
@pytest.mark.parametrize(("section", "parameters"), [(SA1_VAE, 133_431_300), (SAO_VAE, 156_112_514)],
                         ids=["stable_audio_1_0_vae", "stable_audio_open_vae"])
def test_published_vaes_map_every_tensor(sat, section, parameters):
    plan = satcfg.autoencoder_plan(section, 44100, None)
    cfg = load_config(None, [*plan.overrides, "training.stage=autoencoder"])
    sources, shapes = satimport.autoencoder_sources(cfg, plan)
    sat_shapes = meta_shapes(lambda: sat.autoencoders.create_autoencoder_from_config(
        {"sample_rate": 44100, "model": section}))
    assert assert_one_to_one(sources, shapes, sat_shapes) == parameters


def test_the_stable_audio_1_0_unet_maps_every_tensor(sat):
    plan = satcfg.diffusion_plan(SA1_MODEL)
    ae = satcfg.autoencoder_plan(SA1_VAE, 44100, None)
    cfg = load_config(None, [*ae.overrides, *plan.overrides, "model.autoencoder.pretrained=x",
                             "data.window_samples=4194304"])
    sources, shapes = satimport.diffusion_sources(cfg, plan, projection=None)
    unet = meta_shapes(lambda: sat.diffusion.UNetCFG1DWrapper(**SA1_MODEL["diffusion"]["config"]))
    sat_shapes = {f"model.{k}": s for k, s in unet.items()}
    for name in ("seconds_start", "seconds_total"):
        sat_shapes[f"conditioner.conditioners.{name}.int_embedder.weight"] = torch.Size([513, 768])
    assert_one_to_one(sources, shapes, sat_shapes)
    assert sum(s.numel() for s in unet.values()) == 906_679_744  # the paper's 907M
    assert cfg.model.conditioning.text_encoder.layer == -2 and cfg.model.conditioning.text_encoder.max_length == 77
