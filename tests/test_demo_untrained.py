"""The demo's untrained column is the models its training runs started from, whatever ran before."""

import torch

from sa_train.config import load_config
from sa_train.demo import DEMO_MODEL, untrained_models


def weights(seed: int, draws_before: int):
    torch.manual_seed(1234)
    torch.randn(draws_before)  # whatever the process did before: evaluation, other models
    cfg = load_config(None, DEMO_MODEL + ["training.stage=autoencoder", f"training.seed={seed}"])
    model, vae = untrained_models(cfg)
    return model.state_dict(), vae.state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_untrained_models_are_the_seeds_initial_weights_whatever_ran_before():
    model, vae = weights(seed=0, draws_before=0)
    model_again, vae_again = weights(seed=0, draws_before=1000)
    assert same(model, model_again) and same(vae, vae_again)
    # The training tasks build them the same way: seed torch with training.seed, then build.
    from sa_train.models.diffusion_model import DiffusionModel, build_autoencoder

    cfg = load_config(None, DEMO_MODEL + ["training.stage=autoencoder", "training.seed=0"])
    torch.manual_seed(0)
    assert same(model, DiffusionModel(cfg.model).state_dict())
    torch.manual_seed(0)
    assert same(vae, build_autoencoder(cfg.model).state_dict())
    other_model, other_vae = weights(seed=1, draws_before=0)
    assert not same(model, other_model) and not same(vae, other_vae)
