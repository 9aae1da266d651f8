"""The DAC-style VAE and its GAN training losses.

Modules: ``config`` (AutoencoderConfig), ``blocks`` (Snake, residual units, strided blocks),
``vae`` (Encoder, Decoder, VAEBottleneck, AutoencoderVAE), ``losses`` (STFT, hinge and
feature-matching losses), ``discriminator`` (MultiScaleSTFTDiscriminator) and
``training_losses`` (AutoencoderLosses). Nothing is imported here, so reading the config
section does not import torch.
"""
