"""The `blobgan` kind behind the Blobs tab and the scripts: sample layouts, paint (edited) layouts,
and read layouts back out of images with the inversion encoder."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..checkpoint import GENERATOR
from ..config import RunConfig
from ..data import to_float, to_model_images
from ..models.base import Kind
from ..models import blob_layout
from ..models.blob_layout import Layout
from .model import Model


class BlobModel(Model):
    """A trained BlobGAN checkpoint: the (EMA) generator with its layout net, and the inversion
    encoder when the checkpoint has one.

        model = load_model("checkpoints/scenes-blobgan")   # a BlobModel
        lay = model.sample_layout(seed=3)                  # Layout of one image
        img = model.render(blob_layout.move(lay, 2, dx=0.2))
        lay = model.invert(["photo.png"])                  # needs the encoder
    """

    def __init__(self, kind: Kind, cfg: RunConfig, modules: dict[str, nn.Module], folder=None, meta=None):
        if not hasattr(modules.get(GENERATOR), "layout_net"):
            raise ValueError(f"a {cfg.model.kind!r} model has no blob layouts")
        super().__init__(kind, cfg, modules, folder, meta)

    @property
    def encoder(self) -> Optional[nn.Module]:
        return self.modules.get("encoder")

    @torch.no_grad()
    def sample_layout(self, seed: int = 0, n: int = 1) -> Layout:
        return self.g.layout_net(self.kind.seeded_latent(self.cfg.model, n, seed, self.device))

    @torch.no_grad()
    def render(self, layout: Layout) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1]."""
        return self.g.render(layout.to(self.device)).float()

    @torch.no_grad()
    def render_edit(self, before: Layout, after: Layout, local: bool = True,
                    before_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The picture of `after`, an edit of `before`. `local`: repainted only where the edit changes
        the blobs' compositing (`blob_layout.edit_mask`) and kept everywhere else, so a moved blob cannot
        disturb the rest of the scene; otherwise the whole image is drawn again. What is kept is
        `before_image` ((N, C, H, W) in [-1, 1]: the picture being edited, so a chain of edits keeps
        what none of them touched) or, without it, the picture of `before`."""
        image = self.render(after)
        if not local:
            return image
        mask = blob_layout.edit_mask(before.to(self.device), after.to(self.device), self.image_size)
        kept = self.render(before) if before_image is None else before_image.to(image.device, image.dtype)
        return blob_layout.blend_edit(kept, image, mask)

    @torch.no_grad()
    def invert(self, images, float_range=None) -> Layout:
        """Images of any kind and size (see `gan_core.data.to_model_images`) -> their layouts."""
        if self.encoder is None:
            raise ValueError("this checkpoint has no inversion encoder (train one with scripts/train_encoder.py)")
        x = to_model_images(images, self.image_size, self.channels, float_range)
        return self.g.layout_net.decode(self.encoder(to_float(x).to(self.device)))
