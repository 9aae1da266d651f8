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
    # The training tasks build their models with the same functions (initial_diffusion_model,
    # initial_autoencoder), so these are the weights the trained columns started from.
    other_model, other_vae = weights(seed=1, draws_before=0)
    assert not same(model, other_model) and not same(vae, other_vae)
