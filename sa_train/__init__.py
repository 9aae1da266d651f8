"""sa_train: train Stable Audio-style text-to-audio latent diffusion models, from a laptop to a Ray cluster."""

__version__ = "0.1.0"
