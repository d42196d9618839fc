"""GAN Lab core: networks, data, losses, training and checkpoints. Import-safe (no work at import).

Training lives in the `gan_core.train` module (`from gan_core.train import train, train_step`);
it is not re-exported here so that the module name is not shadowed by the function.
"""
from .checkpoint import MODELS, CheckpointError, export, load_models, resolve
from .config import DataConfig, DCGANConfig, RunConfig, TrainConfig
from .data import DataError, ImageDataset, load_dataset
from .dcgan import Discriminator, Generator

__all__ = [
    "MODELS", "CheckpointError", "export", "load_models", "resolve",
    "DataConfig", "DCGANConfig", "RunConfig", "TrainConfig",
    "DataError", "ImageDataset", "load_dataset",
    "Discriminator", "Generator",
]
