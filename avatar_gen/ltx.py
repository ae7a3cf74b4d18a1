"""LTX-Video's VAE compression: the one place these numbers live (no imports, so any layer may read them).

They are LTX's defaults.  Code with a loaded VAE reads its own factors (:func:`avatar_gen.latents.vae.vae_compression`)
and a checkpoint records the factors it was trained with, so a VAE with other factors works wherever code reads them.
"""

# Pixels per latent along height and width: sides must be multiples of it.
LTX_SPATIAL_COMPRESSION = 32
# Frames per latent frame after the first: frame counts are 8k + 1.
LTX_TEMPORAL_COMPRESSION = 8

# LTX-Video 0.9.1+ VAEs decode with timestep conditioning: a little noise at a small decode timestep.  These are the
# values diffusers recommends for them; inference and the trainer's preview videos both decode with them.
LTX_DECODE_TIMESTEP = 0.05
LTX_DECODE_NOISE_SCALE = 0.025
