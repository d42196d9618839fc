"""Trained models for the app and the scripts (hysts' `Model` with `generate`, nanoGPT's
`from_pretrained`): `loading.load_model` reads any checkpoint into its kind's facade.

- `model.Model`: every kind: config, generator, `sampler` (seeds, truncation, GANSpace, slerp, and
  latents refined by the discriminator where the checkpoint ships one);
- `cluster.ClusterModel`: the `cluster` kind as an image classifier with named clusters;
- `blobs.BlobModel`: the `blobgan` kind's layouts: sample, render, invert;
- `loading`: `load_model`, `export` (through the registry and the checkpoint table).

This package's `__init__` imports nothing, so that `gan_core.kinds` can name the facades while
`loading` (above the registry) uses it.
"""
