"""GAN Lab core: data, model kinds, training, checkpoints and trained models. Import-safe (no work
at import time).

Layers, lowest first (a module imports only from layers below it; docs/architecture.md):
    files, config                        atomic writes; data / train / run dataclasses (no torch)
    models/blob_layout                   BlobGAN layouts as data (torch only)
    runtime, shapes, data, augment,      device and precision; datasets and image conversion;
    losses, metrics                      pure losses; measurements
    checkpoint, hub                      the checkpoint folder format; Hub pull and push
    models/                              base (Kind, Models, Batch, latents) + one module per kind
    viz                                  grids and blob pictures
    inference/ (model, sampler,          what a trained checkpoint becomes: Model, Sampler,
      cluster, blobs)                    ClusterModel, BlobModel
    kinds                                THE registry: name -> Kind
    inference/loading, training, jobs    load_model / export; the train() loop; the app's jobs
"""
from .checkpoint import CheckpointError
from .config import DataConfig, RunConfig, TrainConfig
from .data import DataError, ImageDataset, load_dataset
from .inference.blobs import BlobModel
from .inference.cluster import ClusterModel
from .inference.loading import export, load_model
from .inference.model import Model
from .kinds import KINDS
from .models.blobgan import BlobGANConfig
from .models.cluster import ClusterConfig
from .models.dcgan import DCGANConfig, Discriminator, Generator

__all__ = [
    "CheckpointError", "DataConfig", "RunConfig", "TrainConfig", "DataError", "ImageDataset", "load_dataset",
    "BlobModel", "ClusterModel", "export", "load_model", "Model", "KINDS",
    "BlobGANConfig", "ClusterConfig", "DCGANConfig", "Discriminator", "Generator",
]
