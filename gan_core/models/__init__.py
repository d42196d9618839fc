"""The model kinds: `base` (what they share) and one module per kind (its config, networks,
`build` and `train_step`). `blob_layout` is BlobGAN's layout data, used by the painter, the app and
`viz`. The registry that names them is `gan_core.kinds`."""
