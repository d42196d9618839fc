"""GAN Lab: a Gradio app over gan_core. Thin: widgets -> gan_core calls, no model logic here.

This first version samples the bundled default model; the Train, Blobs and Classify tabs follow.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

# No analytics calls from a local or offline app (set GRADIO_ANALYTICS_ENABLED=True to allow them).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from gan_core import checkpoint as ckpt  # noqa: E402
from gan_core.latent import sample  # noqa: E402
from gan_core.viz import image_grid  # noqa: E402

ROOT = Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"
DEFAULT_MODEL = "shapes-dcgan"
DEVICE = os.environ.get("GANLAB_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")


def model_choices() -> list[str]:
    local = sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "config.json").exists()) if CHECKPOINTS.is_dir() else []
    hub = [m.strip() for m in os.environ.get("GANLAB_HUB_MODELS", "").split(",") if m.strip()]
    return local + hub


@functools.lru_cache(maxsize=4)
def load(name: str):
    local = CHECKPOINTS / name
    return ckpt.load_models(local if local.is_dir() else name, device=DEVICE)


def sample_grid(model: str, seed: float, count: float):
    try:
        cfg, g, _, _ = load(model)
    except ckpt.CheckpointError as e:
        raise gr.Error(str(e)) from None
    n = int(count)
    images = sample(g, n, int(seed), cfg.model)
    return image_grid(images, nrow=min(n, 8))


def build() -> gr.Blocks:
    choices = model_choices()
    with gr.Blocks(title="GAN Lab") as demo:
        gr.Markdown("# GAN Lab\nSample the bundled DCGAN. Train, Blobs and Classify tabs are on the way.")
        with gr.Tab("Sample"):
            with gr.Row():
                model = gr.Dropdown(choices, value=DEFAULT_MODEL if DEFAULT_MODEL in choices else (choices or [None])[0],
                                    label="Model")
                seed = gr.Number(value=0, precision=0, label="Seed")
                count = gr.Slider(1, 64, value=16, step=1, label="Images")
            button = gr.Button("Sample", variant="primary")
            out = gr.Image(label="Samples", type="pil", format="png")
        button.click(sample_grid, [model, seed, count], out, api_name="sample")
        demo.load(sample_grid, [model, seed, count], out)
    return demo


if __name__ == "__main__":
    build().launch()
