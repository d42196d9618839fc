"""GAN Lab: a Gradio app over gan_core. Thin: widgets -> gan_core calls, no model logic here.

Models come from `gan_core.inference.loading.load_model`, which returns each kind's facade
(`Model`, `ClusterModel`, `BlobModel`); a tab asks for the facade it needs, never for a kind name.

Tabs: Train (one background job per app instance), Sample (seeds, truncation, GANSpace sliders,
interpolation), Blobs (BlobGAN layouts: see, edit, invert) and Classify (cluster models).
Every event a client may call has a public api_name; the rest are private.
Environment: GANLAB_HUB_MODELS (comma-separated Hub repo ids), GANLAB_WORK_DIR (trained models,
uploads and Gradio's file cache; default runs/app), GANLAB_DEVICE, GANLAB_PUBLIC=1 (public mode, see README),
GANLAB_MCP=0 (no MCP server).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent
WORK_DIR = Path(os.environ.get("GANLAB_WORK_DIR", ROOT / "runs" / "app"))
# No analytics calls from a local or offline app (set GRADIO_ANALYTICS_ENABLED=True to allow them).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Gradio keeps uploads and served files in its cache: inside our work folder, like everything else.
os.environ.setdefault("GRADIO_TEMP_DIR", str(WORK_DIR / "gradio-cache"))

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gan_core import config as config_mod, hub, jobs, kinds, viz  # noqa: E402
from gan_core.checkpoint import FILES, CheckpointError  # noqa: E402
from gan_core.data import DataError, ImageDataset, decode_items, upload_items  # noqa: E402
from gan_core.inference.blobs import BlobModel  # noqa: E402
from gan_core.inference.cluster import ClusterModel, skipped_rows  # noqa: E402
from gan_core.inference.loading import load_model, unpack_model_zip  # noqa: E402
from gan_core.inference.model import Model, recorded_refine  # noqa: E402
from gan_core.inference.sampler import REFINE_MAX  # noqa: E402
from gan_core.models import blob_layout  # noqa: E402
from gan_core.models.blob_layout import Layout  # noqa: E402
from gan_core.runtime import PRECISIONS  # noqa: E402

# An image over PIL's pixel limit (89 M pixels) is refused rather than decoded: a decompression bomb.
warnings.simplefilter("error", Image.DecompressionBombWarning)

try:  # ZeroGPU Spaces: each decorated call gets a GPU, in a separate process
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

CHECKPOINTS = ROOT / "checkpoints"
DEVICE = os.environ.get("GANLAB_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
PUBLIC = os.environ.get("GANLAB_PUBLIC", "") == "1"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULTS = {"sample": "shapes-dcgan", "blobs": "scenes-blobgan", "classify": "fashion-mnist-clusters"}
N_SLIDERS = 8  # sample_images names one parameter per slider (direction_1 ... direction_8)
DISPLAY_TILE = 128  # samples are shown enlarged to about this many pixels a side (see `readable`)
VIEW_SCALE = 4  # blob views are drawn at 4x the model's resolution
# Public mode caps what one visitor can ask of the machine (both overridable by the environment).
MAX_UPLOAD_MB = float(os.environ.get("GANLAB_MAX_UPLOAD_MB", "20" if PUBLIC else "0")) or None  # per request
MAX_JOB_MINUTES = float(os.environ.get("GANLAB_MAX_JOB_MINUTES", "10" if PUBLIC else "0")) or None
JOB = jobs.TrainingJob(WORK_DIR, max_seconds=MAX_JOB_MINUTES * 60 if MAX_JOB_MINUTES else None)
# Each generator paints in the precision and memory format that timed fastest for it on this machine
# (bf16 autocast was about 2.5x faster for 16 samples on a CPU with AVX512-BF16; emulated elsewhere);
# GANLAB_PRECISION=fp32 (or bf16, fp16) sets it instead.
PRECISION = os.environ.get("GANLAB_PRECISION", "auto")
if PRECISION not in ("auto", *PRECISIONS):
    raise SystemExit(f"GANLAB_PRECISION must be auto, {', '.join(PRECISIONS)}, not {PRECISION!r}")
UNREADABLE = (ValueError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning)
# The public API is also an MCP server (tools: sample_images, classify, sample_blobs, ...) where Gradio's
# `mcp` extra is installed; GANLAB_MCP=0 turns it off.
MCP = os.environ.get("GANLAB_MCP", "1") != "0" and importlib.util.find_spec("mcp") is not None


def _scratch() -> Path:
    """A new folder for one response's files, inside the app's work folder (Gradio serves a copy)."""
    root = JOB.work_dir / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="out-", dir=root))


def _one_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _no_paths(message: str) -> str:
    """Server paths in a message -> their last part (a visitor has no business knowing the server's
    folders). The app's own roots go first, whole, since they may hold spaces; then any other path."""
    from gradio.utils import get_upload_folder

    for root in sorted({str(JOB.work_dir.resolve()), str(JOB.work_dir), str(WORK_DIR.resolve()), str(WORK_DIR),
                        str(ROOT), get_upload_folder(), tempfile.gettempdir()}, key=len, reverse=True):
        message = message.replace(root + os.sep, "").replace(root, ".")
    return re.sub(r"(?:[A-Za-z]:)?[/\\][^\s'\"]*[/\\]([^\s'\"/\\]+)", r"\1", message)


def _one_line_inputs(component: type):
    """A maker of `component` (a Gradio input class) widgets whose bad values reach the visitor as one
    clear line. Gradio checks and decodes inputs before the handler runs; its own message for a bad
    value (an unreadable image, text where a number goes) is several lines that also name the server's
    cache path. The widget is Gradio's own (a subclass would make Gradio write a .pyi file beside
    this one); only its instance's `preprocess` is wrapped."""
    numeric = issubclass(component, (gr.Number, gr.Slider))

    def make(*args, **kwargs):
        widget = component(*args, **kwargs)
        original = widget.preprocess

        def preprocess(payload):
            try:
                return original(payload)
            except gr.Error:
                raise
            except Exception as e:  # noqa: BLE001 - whatever the decoder raises, the visitor gets one line
                if numeric:
                    raise gr.Error(f"{widget.label or 'This value'} must be a number.") from None
                what = "that image" if issubclass(component, gr.Image) else f"the {widget.label or 'input'}"
                raise gr.Error(f"Could not read {what}: {_no_paths(_one_line(e))}") from None

        preprocess.__annotations__ = getattr(original, "__annotations__", {})
        widget.preprocess = preprocess
        return widget

    return make


# Every input widget of the page is made by one of these.
Number, Slider, ImageInput, File, Dataframe, JSON = map(_one_line_inputs, (gr.Number, gr.Slider, gr.Image, gr.File,
                                                                      gr.Dataframe, gr.JSON))


# ---------------------------------------------------------------- models: one registry for every picker

def uploads_dir() -> Path:
    """Where checkpoint zips opened by visitors are unpacked."""
    return JOB.work_dir / "uploaded-models"


# Public mode keeps at most this many uploaded models (the oldest go first), so uploads cannot fill the disk.
MAX_UPLOADED_MODELS = int(os.environ.get("GANLAB_MAX_UPLOADED_MODELS", "20"))


def model_sources() -> dict[str, str]:
    """name -> local folder or Hub repo id: bundled checkpoints, models trained here, GANLAB_HUB_MODELS."""
    out = {}
    for base in (uploads_dir(), CHECKPOINTS, JOB.models_dir):  # (uploads first: they never shadow another model)
        if base.is_dir():
            out.update((p.name, str(p)) for p in sorted(base.iterdir())
                       if not p.name.startswith(".") and (p / FILES["config"]).exists())  # (not a half-written one)
    for repo in os.environ.get("GANLAB_HUB_MODELS", "").split(","):
        if repo.strip():
            out[repo.strip()] = repo.strip()
    return out


def model_facade(source: str) -> type | None:
    """The class a local checkpoint loads as (Model, ClusterModel, BlobModel, ...), from its
    config.json; None for a Hub id not downloaded yet or an unreadable folder."""
    try:
        return (kinds.of(kinds.read_config(source)[0]).facade or Model) if Path(source).is_dir() else None
    except (CheckpointError, ValueError):
        return None


def model_choices(*facades: type) -> list[str]:
    """Model names for a picker: all of them, or those that load as one of `facades` (plus Hub ids,
    whose kind is known only once downloaded)."""
    out = []
    for name, src in model_sources().items():
        facade = model_facade(src) if facades else None
        if not facades or facade is None or issubclass(facade, facades):
            out.append(name)
    return out


def local_meta(source: str) -> dict | None:
    """A local checkpoint's config.json entries, read without loading the model (None for a Hub id or
    an unreadable folder)."""
    try:
        return kinds.read_config(source)[1] if Path(source).is_dir() else None
    except (CheckpointError, ValueError):
        return None


def sample_quality(source: str) -> dict | None:
    """The figures `scripts/evaluate_samples.py --record` stored in a local checkpoint's config.json."""
    meta = local_meta(source)
    return meta.get("sample_quality") if meta else None


def quality_text(name: str | None) -> str:
    """One line on how good a model's samples measured (or that they were not measured)."""
    q = sample_quality(model_sources().get(name, "")) if name else None
    if not q or "fid" not in q:
        return "Sample quality: not measured (`python -m scripts.evaluate_samples --checkpoint DIR --record`)."
    step = f" of {q['refine_step']:g}" if isinstance(q.get("refine_step"), (int, float)) else ""
    drawn = f", refined with D for {q['refine']} steps{step}" if q.get("refine") else ""
    return (f"Sample quality ({q.get('n', '?')} samples{drawn}, {q.get('evaluator')} evaluator): FID {q['fid']:.3g} "
            f"against {q['real_fid']:.3g} for real held-out images (x{q['fid_ratio']:.0f}); precision "
            f"{q['precision']:.2f}, recall {q['recall']:.2f}; {q['class_coverage']} of {q.get('classes', '?')} classes drawn.")


def refine_default(name: str | None) -> int:
    """The Refine-with-D steps of a model's default draw (`Model.default_refine`): read from a listed
    local checkpoint's config.json without loading it, else from the loaded model; 0 for a model that
    cannot be read (its error shows when it is drawn)."""
    source = model_sources().get(name, "") if name else ""
    if Path(source).is_dir():
        try:
            return recorded_refine(local_meta(source) or {})
        except (ValueError, TypeError):  # a hand-edited entry that is no number
            return 0
    try:
        return load(name).default_refine
    except gr.Error:
        return 0


def best_bundled_sampler(choices: list[str]) -> str | None:
    """The bundled model whose samples scored best against their own floor (lowest FID / real FID)."""
    scored = []
    sources = model_sources()
    for name in choices:
        source = sources.get(name, "")
        q = sample_quality(source) if Path(source).parent == CHECKPOINTS else None
        if q and q.get("fid_ratio"):
            scored.append((q["fid_ratio"], name))
    return min(scored)[1] if scored else None


def default_model(tab: str, choices: list[str]) -> str | None:
    if tab == "sample" and (best := best_bundled_sampler(choices)):
        return best
    return DEFAULTS[tab] if DEFAULTS[tab] in choices else (choices[0] if choices else None)


def _stamp(source: str) -> float:
    p = Path(source) / "config.json"
    return p.stat().st_mtime if p.exists() else 0.0


@functools.lru_cache(maxsize=8)
def _load(source: str, stamp: float) -> Model:
    model = load_model(source, device=DEVICE)
    model.choose_runtime(PRECISION)  # timed once per model and machine, then cached
    return model


# What each tab can show: any model, or a facade with what that tab needs.
TAB_NEEDS = {"sample": (), "blobs": (BlobModel,), "classify": (ClusterModel,)}


def load(name: str | None, *facades: type) -> Model:
    """The loaded model (a Model, or a ClusterModel / BlobModel); a gr.Error with one line if that
    fails or if it is not one of `facades`."""
    if not name:
        raise gr.Error("Pick a model first.")
    source = model_sources().get(name) or local_model_path(name)
    if source is None:
        raise gr.Error(f"Unknown model {name!r}: pick one from the list" + (
            "." if PUBLIC else ", or type the path of a run folder or checkpoint folder on this machine."))
    try:
        model = _load(source, _stamp(source))
    except (CheckpointError, OSError, ValueError) as e:
        raise gr.Error(f"Could not load {name}: {e}") from None
    if facades and not isinstance(model, facades):
        fitting = [k.name for k in kinds.KINDS.values() if k.facade is not None and issubclass(k.facade, facades)]
        raise gr.Error(f"{name} is a {model.cfg.model.kind} model; this tab needs a {' or '.join(fitting)} model.")
    return model


def local_model_path(typed: str) -> str | None:
    """A run folder (its latest checkpoint) or checkpoint folder typed into a picker -> the checkpoint
    folder, so a command-line run opens without a restart. Never in public mode (a visitor may not
    read the server's disk); None where the text is no such folder."""
    if PUBLIC or not typed or not Path(typed).expanduser().is_dir():
        return None
    try:
        return str(hub.resolve(typed))  # a local folder: nothing is downloaded
    except CheckpointError as e:
        raise gr.Error(f"{typed} is a folder but not a model: {_one_line(e)}") from None


def refresh_pickers(sample_model, blob_model, classify_model):
    """New choices for the three pickers (after training saved a model), keeping each selection."""
    out = []
    for value, tab in ((sample_model, "sample"), (blob_model, "blobs"), (classify_model, "classify")):
        choices = model_choices(*TAB_NEEDS[tab])
        out.append(gr.update(choices=choices, value=value if value in choices else default_model(tab, choices)))
    return out


def open_model_zip(file, sample_model, blob_model, classify_model):
    """A checkpoint zip uploaded by a visitor -> a model in every picker that fits it (selected there).
    Untrusted: `loading.unpack_model_zip` takes only a checkpoint's own files, caps sizes and loads it
    (safetensors only) before it is listed."""
    if not file:
        return ("", *(gr.update() for _ in range(3)))
    path = file if isinstance(file, str) else getattr(file, "name", file)
    limit = int((MAX_UPLOAD_MB or 512) * 2**20)
    try:
        folder = unpack_model_zip(path, uploads_dir(), max_bytes=limit, taken=set(model_sources()))
    except CheckpointError as e:
        raise gr.Error(f"Could not open that model: {_no_paths(_one_line(e))}") from None
    if PUBLIC:  # the oldest uploads make room
        kept = sorted((p for p in uploads_dir().iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[MAX_UPLOADED_MODELS:]:
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    updates = refresh_pickers(sample_model, blob_model, classify_model)
    for update in updates:  # selected in every picker whose choices (filtered by kind) include it
        if folder.name in update["choices"]:
            update["value"] = folder.name
    kind = kinds.read_config(folder)[0].model.kind
    return (f"Opened **{folder.name}** ({kind}); it is in the pickers of every tab it fits, for every visitor.",
            *updates)


PICKER_POLL_S = 5.0  # an open page looks for new models this often


def pickers_if_changed(known: list | None, sample_model, blob_model, classify_model):
    """For an open page's timer: new picker choices only when the set of models changed since `known`
    (a model saved by any visitor or copied in reaches pages that are already open); otherwise no
    update at all, so a picker being used is left alone."""
    names = sorted(model_sources())
    if known is not None and names == sorted(known):
        return known, gr.update(), gr.update(), gr.update()
    return names, *refresh_pickers(sample_model, blob_model, classify_model)


def _number(value, name: str, lo: float, hi: float, integer: bool = True):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number") from None
    if v != v or not lo <= v <= hi:
        raise gr.Error(f"{name} must be between {lo:g} and {hi:g}")
    return int(v) if integer else v


# ---------------------------------------------------------------- Sample

def _code(m: Model, code: str | None) -> int | None:
    try:
        return m.code_index(code)
    except ValueError:
        raise gr.Error(f"Unknown cluster {code!r}") from None


@gpu
def readable(image: Image.Image, side: int) -> Image.Image:
    """A picture of `side`-pixel tiles enlarged by a whole factor (nearest neighbour, so no pixel is
    invented) until a tile is about DISPLAY_TILE pixels: 32 px samples shown at 128 px are readable."""
    factor = max(1, DISPLAY_TILE // side)
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def sample_images(model: str, seed: int = 0, count: int = 16, truncation: float = 1.0, code: str = "random",
                  raw_z: bool = False, gallery: bool = False,
                  direction_1: float = 0.0, direction_2: float = 0.0, direction_3: float = 0.0,
                  direction_4: float = 0.0, direction_5: float = 0.0, direction_6: float = 0.0,
                  direction_7: float = 0.0, direction_8: float = 0.0, refine: int | None = None):
    """Draw images from a generator.

    Args:
        model: a model name from the Sample tab's picker (or, outside public mode, a run folder).
        seed: the random seed; the same seed gives the same images.
        count: how many images, 1-64.
        truncation: latent scale, 0-2 (1: as trained; lower: more typical, less varied).
        code: for `cluster` models, "random" or a cluster's name to draw from that cluster only.
        raw_z: the direction sliders move z[i] itself instead of a principal direction.
        gallery: also return each image on its own.
        direction_1: offset along the first principal direction of the latent (GANSpace), -3 to 3.
        direction_2: offset along the second principal direction of the latent (GANSpace), -3 to 3.
        direction_3: offset along the third principal direction of the latent (GANSpace), -3 to 3.
        direction_4: offset along the fourth principal direction of the latent (GANSpace), -3 to 3.
        direction_5: offset along the fifth principal direction of the latent (GANSpace), -3 to 3.
        direction_6: offset along the sixth principal direction of the latent (GANSpace), -3 to 3.
        direction_7: offset along the seventh principal direction of the latent (GANSpace), -3 to 3.
        direction_8: offset along the eighth principal direction of the latent (GANSpace), -3 to 3.
        refine: 0-50 steps that move each latent to where the model's discriminator finds its image more
            real (fewer misdrawn samples; slower; needs a model that ships its discriminator). None: the
            model's default draw (the steps its sample quality was measured with; 0 if none were stored).

    Returns:
        One grid image (small images enlarged for display), and the single images or None.
    """
    sliders = (direction_1, direction_2, direction_3, direction_4, direction_5, direction_6, direction_7, direction_8)
    m = load(model)
    n = _number(count, "Images", 1, 64)
    seed = _number(seed, "Seed", 0, 2**31 - 1)
    truncation = _number(truncation, "Truncation", 0.0, 2.0, integer=False)
    z = m.sampler.latents(n, seed, truncation, _code(m, code))
    alphas = [_number(a, "Slider", -10, 10, integer=False) for a in sliders]
    z = m.sampler.move(z, alphas, raw=bool(raw_z))
    steps = m.default_refine if refine is None else _number(refine, "Refine with D", 0, REFINE_MAX)
    if steps and not m.sampler.can_refine:
        raise gr.Error("This model ships no discriminator, so its samples cannot be refined: set Refine with D to 0")
    z = m.sampler.refine(z, steps)
    with m.painting():
        images = m.sampler.generate(z)
    side = images.shape[-1]
    grid = readable(viz.image_grid(images, nrow=min(n, 8)), side)
    singles = [readable(viz.image_grid(im[None], nrow=1, padding=0), side) for im in images] if gallery else None
    return grid, singles


@gpu
def interpolate(model: str, seed_a: int = 0, seed_b: int = 1, frames: int = 8, truncation: float = 1.0,
                code: str = "random"):
    """Walk from one seed's latent to another's and draw the frames.

    Args:
        model: a model name from the Sample tab's picker.
        seed_a: the seed the walk starts from.
        seed_b: the seed it ends at.
        frames: how many frames, 2-32.
        truncation: latent scale, 0-2 (1: as trained).
        code: for `cluster` models, "random" or a cluster's name.

    Returns:
        The frames side by side as one image, and an animated GIF that goes there and back.
    """
    m = load(model)
    n = _number(frames, "Frames", 2, 32)
    truncation = _number(truncation, "Truncation", 0.0, 2.0, integer=False)
    z = m.sampler.interpolation(_number(seed_a, "Seed A", 0, 2**31 - 1), _number(seed_b, "Seed B", 0, 2**31 - 1),
                                n, truncation, _code(m, code))
    with m.painting():
        images = m.sampler.generate(z)
    strip = viz.image_grid(images, nrow=n)
    frames_pil = [viz.image_grid(im[None], nrow=1, padding=0).resize((128, 128), Image.NEAREST) for im in images]
    gif = _scratch() / "interpolation.gif"
    frames_pil[0].save(gif, save_all=True, append_images=frames_pil[1:] + frames_pil[::-1][1:-1], duration=80, loop=0)
    return strip, str(gif)


def code_choices(model):
    """The code picker follows the Sample model: visible for models whose generator takes a code
    (a cluster model's codes are its clusters)."""
    try:
        names = load(model).code_names
    except gr.Error:
        names = []
    return gr.update(choices=["random"] + names, value="random", visible=bool(names))


# ---------------------------------------------------------------- Blobs

def _shown_image(shown, size: int) -> torch.Tensor | None:
    """The Blobs tab's picture as the model drew it ((1, C, size, size) in [-1, 1]), from the enlarged view
    the browser sends back; None when it is not that view (another size, none, or not an image)."""
    if not isinstance(shown, Image.Image) or shown.size != (size * VIEW_SCALE,) * 2:
        return None
    small = np.asarray(shown.convert("RGB").resize((size, size), Image.NEAREST), dtype=np.float32)
    return torch.from_numpy(small).permute(2, 0, 1)[None] / 127.5 - 1


def _blob_views(model: BlobModel, layout: Layout, before: Layout | None = None, local: bool = True, shown=None):
    with model.painting():
        kept = _shown_image(shown, model.cfg.data.image_size) if before is not None and model.channels == 3 else None
        drawn = model.render(layout) if before is None else model.render_edit(before, layout, local, kept)
    image = drawn[0].float().cpu()
    size = model.cfg.data.image_size
    plain = viz.image_grid(image[None], nrow=1, padding=0).resize((size * VIEW_SCALE,) * 2, Image.NEAREST)
    bmap = viz.blob_map(layout, size=size, scale=VIEW_SCALE)
    ellipses = viz.draw_blobs(image, layout, scale=VIEW_SCALE)
    return plain, bmap, ellipses, image


def _blob_outputs(model, layout: Layout, selected=None, before: Layout | None = None, local: bool = True, shown=None):
    plain, bmap, ellipses, image = _blob_views(model, layout, before, local, shown)
    visible = layout.visible()[0].tolist()
    choices = [(f"blob {k}" + ("" if visible[k] else " (hidden)"), k) for k in range(layout.k)]
    # selected by default: the blob that paints the most of the picture (not one with nothing to show)
    biggest = blob_layout.most_visible(layout, model.cfg.data.image_size, image[None])
    value = selected if selected in range(layout.k) else (biggest if biggest is not None else 0)
    return plain, bmap, ellipses, layout.to_dict(), gr.update(choices=choices, value=value)


def _layout_in(value) -> Layout:
    try:
        return Layout.from_dict(value)
    except ValueError as e:
        raise gr.Error(f"Bad layout: {e}") from None


@gpu
def sample_blobs(model: str, seed: int = 0):
    """Draw a BlobGAN layout (soft ellipses, one per object) and the image painted from it.

    Args:
        model: a BlobGAN model's name from the Blobs tab's picker (scenes-blobgan is bundled).
        seed: the random seed of the layout.

    Returns:
        The image, the blob map (each blob's area in its colour), the blobs drawn as numbered ellipses on
        the image, the layout as JSON (pass it to edit_blob) and the selected blob (the most visible one).
    """
    bm = load(model, BlobModel)
    layout = bm.sample_layout(_number(seed, "Seed", 0, 2**31 - 1))
    return _blob_outputs(bm, layout.to("cpu"))


@gpu
def edit_blob(model: str, layout_json: dict, blob: int, action: str = "move", dx: float = 0.1, dy: float = 0.0,
              ds: float = 1.0, depth: int = 7, source_seed: int = 1, local: bool = True, shown=None):
    """Apply one edit to one blob of a layout and repaint the image.

    Args:
        model: the BlobGAN model the layout came from.
        layout_json: a layout from sample_blobs, invert_image or an earlier edit_blob.
        blob: the blob to edit (0 to the number of blobs - 1).
        action: move, resize, hide, show, restyle or depth.
        dx: for move: the horizontal shift, as a fraction of the image (-1 to 1).
        dy: for move: the vertical shift (down is positive).
        ds: for resize: the change in the blob's size (log scale; positive grows it).
        depth: for depth: the slot to move the blob to (a higher slot is drawn in front).
        source_seed: for restyle: the blob takes its style from the same blob of this seed's layout.
        local: repaint only where the edit changes the blobs (the rest stays exactly as it was);
            false: the generator draws the whole image again.
        shown: the picture being edited, as this function returned it (so a chain of local edits keeps
            what none of them touched); without it, the layout's own picture.

    Returns:
        The repainted image, blob map, ellipses, the new layout and the edited blob.
    """
    bm = load(model, BlobModel)
    layout = before = _layout_in(layout_json)
    if layout.k != bm.cfg.model.blobs or layout.phi.shape[-1] != bm.cfg.model.feature_dim:
        raise gr.Error("That layout belongs to another model: sample or invert one with this model first.")
    k = _number(blob, "Blob", 0, layout.k - 1)
    if action == "move":
        layout = blob_layout.move(layout, k, _number(dx, "dx", -1, 1, False), _number(dy, "dy", -1, 1, False))
    elif action == "resize":
        layout = blob_layout.resize(layout, k, _number(ds, "Size change", -20, 20, False))
    elif action == "hide":
        layout = blob_layout.hide(layout, k)
    elif action == "show":
        layout = blob_layout.show(layout, k)
    elif action == "restyle":
        source = bm.sample_layout(_number(source_seed, "Style seed", 0, 2**31 - 1)).to("cpu")
        layout = blob_layout.restyle(layout, k, source)
    elif action == "depth":
        layout = blob_layout.reorder(layout, k, _number(depth, "Depth", 0, layout.k - 1))
        k = _number(depth, "Depth", 0, layout.k - 1)
    else:
        raise gr.Error(f"Unknown action {action!r}: move, resize, hide, show, restyle or depth")
    return _blob_outputs(bm, layout, k, before=before, local=bool(local), shown=shown)


@gpu
def invert_image(model: str, image):
    """Read the layout of blobs out of any image with the model's encoder, and repaint it.

    Args:
        model: a BlobGAN model with an inversion encoder (scenes-blobgan).
        image: the image to invert (any size; resized to the model's).

    Returns:
        The repainted image, blob map, ellipses, the layout (editable with edit_blob) and the selected blob.
    """
    bm = load(model, BlobModel)
    if image is None:
        raise gr.Error("Upload an image to invert.")
    if bm.encoder is None:
        raise gr.Error(f"{model} has no inversion encoder.")
    try:
        layout = bm.invert([image]).to("cpu")
    except UNREADABLE as e:
        raise gr.Error(f"Could not read that image: {_one_line(e)}") from None
    return _blob_outputs(bm, layout)


def pick_blob(model, layout_json, evt: gr.SelectData):
    """A click on the image selects the blob that paints that pixel."""
    bm = load(model, BlobModel)
    layout = _layout_in(layout_json)
    x, y = evt.index
    side = bm.cfg.data.image_size * VIEW_SCALE
    k = blob_layout.blob_at(layout, x / side, y / side, bm.cfg.data.image_size)
    return gr.update() if k is None else gr.update(value=k)


# ---------------------------------------------------------------- Classify

def _read_image(image) -> Image.Image:
    if image is None:
        raise gr.Error("Upload an image to classify.")
    return image if isinstance(image, Image.Image) else Image.open(image)


@gpu
def classify(model: str, image):
    """Sort one image into one of a cluster model's clusters.

    Args:
        model: a cluster model's name from the Classify tab's picker (fashion-mnist-clusters, shapes-clusters, ...).
        image: the image (any size; it is resized and converted as the model was trained).

    Returns:
        The cluster probabilities (the top 3), or "unsure" when the image looks unlike the model's training
        images; and one line saying how familiar the image looks and, when unsure, the best guesses.
    """
    cm = load(model, ClusterModel)
    try:
        pred = cm.predict([_read_image(image)])
    except UNREADABLE as e:
        raise gr.Error(f"Could not read that image: {_one_line(e)}") from None
    return (UNSURE_LABEL if pred.unsure(0) else pred.labels(0)), verdict(pred)


UNSURE_LABEL = "unsure"


def verdict(pred) -> str:
    """One line under the label: how much the image looks like the training images."""
    if pred.familiarity is None:
        return "This model has no familiarity statistics, so an image unlike its training data is not flagged."
    score, threshold = float(pred.familiarity[0]), pred.threshold
    if pred.unsure(0):
        guesses = ", ".join(f"{name} {p:.0%}" for name, p in pred.top(0, 3))
        return (f"**Unsure:** this image looks unlike the model's training images (familiarity {score:.2f}; "
                f"99% of training images reach {threshold:.2f}), so its cluster probabilities mean little. "
                f"Best guesses: {guesses}.")
    return f"Looks like the model's training images (familiarity {score:.2f}; 99% of training images reach {threshold:.2f})."


def _uploaded(files, skipped: list | None = None) -> list:
    """Gradio file values (paths or file objects) -> [(name, read bytes)] of their images; zip members
    left out go to `skipped` as (name, why)."""
    if not files:
        raise gr.Error("Upload images or a zip of images first.")
    paths = [f if isinstance(f, str) else getattr(f, "name", f) for f in files]
    if MAX_UPLOAD_MB:
        total = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
        if total > MAX_UPLOAD_MB * 2**20:
            raise gr.Error(f"Uploads are limited to {MAX_UPLOAD_MB:g} MB per request here; these are "
                           f"{total / 2**20:.1f} MB.")
    try:
        return upload_items(paths, skipped=skipped)
    except (DataError, OSError) as e:
        raise gr.Error(str(e)) from None


@gpu
def classify_batch(model: str, files: list):
    """Sort many images, or zips of images, into a cluster model's clusters.

    Args:
        model: a cluster model's name (fashion-mnist-clusters, shapes-clusters, ...).
        files: image files and/or zip files of images.

    Returns:
        A row per file (file, cluster, confidence, top 3; "(unsure)", "(unreadable)" or "(skipped: why)"
        where it applies), counts per cluster, and the rows as a CSV file.
    """
    cm = load(model, ClusterModel)
    skipped: list = []
    result = cm.assign(_uploaded(files, skipped))
    if result.images == 0:
        raise gr.Error("None of the uploaded files could be read as an image.")
    if skipped:  # nothing is dropped without a word: a toast, and a row per file left out
        names = ", ".join(name.split(":", 1)[-1] for name, _ in skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        gr.Warning(f"{len(skipped)} file{'s' * (len(skipped) > 1)} in the zip left out: {names}")
        result.rows.extend(skipped_rows(skipped))
    counts = pd.DataFrame({"cluster": list(result.counts), "images": list(result.counts.values())})
    out = _scratch() / "assignments.csv"
    with out.open("w", newline="") as f:
        result.write_csv(f)
    return pd.DataFrame(result.rows), counts, str(out)


def exemplar_gallery(model, cluster, progress=gr.Progress()):
    """The cluster's most confident training images, then images its generator draws for it."""
    cm = load(model, ClusterModel)
    if cluster not in cm.names:
        raise gr.Error("Pick a cluster.")
    k = cm.names.index(cluster)
    if not cm.training_images_scored:  # say why the first call takes a while
        progress(0, desc="Scoring the model's training images once (a few seconds on a CPU); "
                         "every cluster after this is instant")
    try:
        ex = cm.exemplars(k, n=8)
    except (ValueError, DataError, OSError) as e:
        raise gr.Error(f"No exemplars: {e}") from None
    real = [(viz.image_grid(x[None].float() / 127.5 - 1 if x.dtype == torch.uint8 else x[None], nrow=1, padding=0),
             f"train {c:.0%}") for x, c in zip(ex.real, ex.confidence)]  # short: captions are narrow
    fake = [(viz.image_grid(x[None], nrow=1, padding=0), "generated") for x in ex.fake]
    return real + fake


def cluster_names(model):
    cm = load(model, ClusterModel)
    names = pd.DataFrame({"cluster": list(range(cm.k)), "name": cm.names})
    return names, gr.update(choices=cm.names, value=cm.names[0])


def save_cluster_names(model, table):
    cm = load(model, ClusterModel)
    if PUBLIC:
        raise gr.Error("Renaming is off in public mode: download the model and rename it locally.")
    names = [str(n) for n in (table["name"].tolist() if isinstance(table, pd.DataFrame) else [r[1] for r in table])]
    try:
        cm.rename(names)
        cm.save_names()
    except (ValueError, OSError) as e:
        raise gr.Error(f"Could not save the names: {e}") from None
    _load.cache_clear()
    return f"Saved {len(names)} names with {model}.", gr.update(choices=cm.names, value=cm.names[0])


# ---------------------------------------------------------------- example images

EXAMPLE_SIDE = 128  # example pictures are written enlarged (nearest neighbour) so their thumbnails are readable


def example_images() -> dict[str, list[tuple[str, str]]]:
    """Example pictures for Classify and Blobs, written once into the work folder from the built-in
    datasets (and Fashion-MNIST's test split where it is installed): {"classify" | "blobs": [(path, caption)]}.
    Nothing is downloaded; a source that cannot be read is left out."""
    from gan_core.config import DataConfig
    from gan_core.data import load_dataset

    folder = JOB.work_dir / "examples"
    folder.mkdir(parents=True, exist_ok=True)

    def save(images, stem: str) -> list[str]:
        paths = []
        for i, x in enumerate(images):
            path = folder / f"{stem}-{i}.png"
            if not path.exists():
                viz.image_grid(x[None].float() / 127.5 - 1, nrow=1, padding=0).resize(
                    (EXAMPLE_SIDE, EXAMPLE_SIDE), Image.NEAREST).save(path)
            paths.append(str(path))
        return paths

    out: dict[str, list[tuple[str, str]]] = {"classify": [], "blobs": []}
    try:
        if (FMNIST / "t10k-images-idx3-ubyte.gz").exists():
            test = load_dataset(DataConfig(source="idx", path=str(FMNIST), split="test", image_size=32, channels=1,
                                           limit=100))
            picks = [int((test.labels == c).nonzero()[0]) for c in (0, 1, 7, 8)]  # a top, trousers, a sneaker, a bag
            out["classify"] += [(p, "Fashion-MNIST test image") for p in save(test.images[picks], "fashion")]
        shapes = load_dataset(DataConfig(source="shapes", num_images=3, seed=20_000, image_size=64, channels=3))
        out["classify"] += [(p, "built-in shape") for p in save(shapes.images, "shape")]
        scenes = load_dataset(DataConfig(source="scenes", num_images=4, seed=20_000, image_size=64, channels=3))
        out["blobs"] += [(p, "built-in scene") for p in save(scenes.images, "scene")]
    except (DataError, OSError, ValueError) as e:
        warnings.warn(f"example images left out: {e}")
    return out


# ---------------------------------------------------------------- Train

DATASETS = ["shapes", "scenes"] + (["fashion-mnist"] if (FMNIST / "train-images-idx3-ubyte.gz").exists() else []) \
    + ["upload", "Hub dataset"] + ([] if PUBLIC else ["parquet path"])


def _run_config(dataset, upload, text, kind, steps, batch, lr, size, channels, k):
    steps = _number(steps, "Steps", 1, 2000 if PUBLIC else 1_000_000)
    batch = _number(batch, "Batch size", 1, 1024)
    lr = _number(lr, "Learning rate", 1e-6, 0.1, integer=False)
    size = _number(size, "Image size", 16, 128)
    channels = _number(channels, "Channels", 1, 3)
    if kind not in kinds.KINDS:
        raise gr.Error(f"Unknown model kind {kind!r}")
    model = kinds.KINDS[kind].config()
    has_k = hasattr(model, "k")  # the K widget maps onto the field of the kinds that have one
    data, dataset_fn = config_mod.DataConfig(image_size=size, channels=channels), None
    if dataset in ("shapes", "scenes"):
        data.source, data.num_images = dataset, 4000 if PUBLIC else 20000
    elif dataset == "fashion-mnist":
        data.source, data.path = "idx", str(FMNIST)
    elif dataset == "upload":
        items = _uploaded(upload)
        if has_k and len(items) < _number(k, "K", 2, 100):
            need = _number(k, "K", 2, 100)
            raise gr.Error(f"K = {need} clusters need at least {need} images; {len(items)} were uploaded.")

        def dataset_fn():
            images, ok = decode_items(items, size, channels)
            if len(images) == 0:
                raise DataError("none of the uploaded files could be read as an image")
            return ImageDataset(images=images, skipped=int((~ok).sum()))
    elif dataset == "Hub dataset":
        repo = (text or "").strip()
        if not repo:
            raise gr.Error("Type a Hub dataset id, e.g. user/name.")
        if PUBLIC and (repo.startswith((".", "/", "~")) or ".." in repo or "\\" in repo or repo.count("/") > 1):
            raise gr.Error("Public mode takes Hub dataset ids (user/name) only, not server paths.")
        data.source, data.path = "hub", repo
    elif dataset == "parquet path" and not PUBLIC:
        if not (text or "").strip():
            raise gr.Error("Type the path of a parquet file or folder.")
        data.source, data.path = "parquet", text.strip()
    else:
        raise gr.Error(f"Unknown dataset choice {dataset!r}")
    if has_k:
        model.k = _number(k, "K", 2, 100)
    train_cfg = config_mod.TrainConfig(steps=steps, batch_size=batch, lr=lr, device=DEVICE, log_every=10,
                                       sample_every=max(10, steps // 20), checkpoint_every=max(50, steps // 4))
    cfg = config_mod.sync_model_to_data(config_mod.RunConfig(model=model, data=data, train=train_cfg))
    try:
        kinds.validate(cfg)
    except ValueError as e:
        raise gr.Error(str(e)) from None
    return cfg, dataset_fn


LOSS_NAMES = {"loss_d": "D (discriminator)", "loss_g": "G (generator)"}


def _job_outputs(status: jobs.JobStatus):
    # Named series and numeric columns: the legend tells D from G, and one point still gets a numeric axis.
    losses = pd.DataFrame(status.losses or [], columns=["step", "loss", "value"])
    losses["loss"] = losses["loss"].map(lambda name: LOSS_NAMES.get(name, name))
    losses = losses.astype({"step": "int64", "value": "float64"})
    download = str(status.zip_path) if status.zip_path else None
    return _no_paths(status.summary()), losses, status.sample, download


def start_training(dataset: str, upload: list | None, text: str, kind: str, steps: int, batch: int, lr: float,
                   size: int, channels: int, k: int, name: str, progress=gr.Progress()):
    """Train a model (one job at a time per app) and follow it to the end.

    Args:
        dataset: shapes, scenes, fashion-mnist (where installed), upload, "Hub dataset" or "parquet path".
        upload: for upload: image files or zips.
        text: for "Hub dataset": a dataset id (user/name); for "parquet path": a file or folder.
        kind: dcgan (samples), cluster (sorts images into K groups) or blobgan (editable layouts).
        steps: training updates.
        batch: images per step.
        lr: Adam's learning rate (2e-4 as in DCGAN).
        size: image size in pixels a side (32 or 64).
        channels: 1 (greyscale) or 3 (colour).
        k: for cluster models: how many clusters.
        name: the model's name in the pickers (empty: automatic).

    Returns:
        The job's status line, the losses, the latest samples and, once saved, the checkpoint as a zip.
    """
    cfg, dataset_fn = _run_config(dataset, upload, text, kind, steps, batch, lr, size, channels, k)
    name = (name or "").strip() or f"{kind}-{dataset.split()[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    settings = dict(zip(FORM_FIELDS, (dataset, kind, steps, batch, lr, size, channels, k, name)))
    try:
        JOB.start(cfg, name, dataset_fn, settings=settings)
    except jobs.JobBusy as e:
        raise gr.Error(f"Another training job is running. {e}") from None
    except (ValueError, OSError) as e:
        raise gr.Error(_no_paths(_one_line(e))) from None
    while True:
        status = JOB.status()
        if status.steps:
            progress((status.step, status.steps), desc=status.summary(), unit="steps")
        yield _job_outputs(status)
        if not status.running:
            break
        time.sleep(1.0)
    if status.state == "failed":
        raise gr.Error(_no_paths(status.summary()))


# The Train form's fields, in the order `job_form` fills them from the running job's settings.
FORM_FIELDS = ("dataset", "kind", "steps", "batch", "lr", "size", "channels", "k", "name")


def job_form():
    """The running job's settings for the Train form (a visitor who opens the page during someone
    else's job sees what runs, not the defaults); nothing changes when no job runs."""
    status = JOB.status()
    if not status.running or not status.settings:
        return [gr.update() for _ in FORM_FIELDS]
    return [gr.update(value=status.settings[f]) if f in status.settings else gr.update() for f in FORM_FIELDS]


def stop_training():
    """Stop the running training job; it saves a checkpoint first.

    Returns:
        What happened, in one line.
    """
    return "Stopping: the job saves a checkpoint first." if JOB.stop() else "No training job is running."


def job_view():
    return _job_outputs(JOB.status())


def push_to_hub(repo_id: str, token: str, private: bool = True):
    """Upload the last model trained in this app to the Hugging Face Hub.

    Args:
        repo_id: the Hub repository, user/name.
        token: a Hub token with write access; used for this call only, never logged or stored.
        private: create the repository as private.

    Returns:
        The repository's address.
    """
    status = JOB.status()
    if status.model_dir is None or not status.model_dir.exists():
        raise gr.Error("Train a model first: there is nothing to push yet.")
    if not (repo_id or "").strip() or (repo_id or "").count("/") != 1:
        raise gr.Error("Type a Hub repo id as user/name.")
    if not (token or "").strip():
        raise gr.Error("Paste a Hub token with write access.")
    try:
        hub.push(hub.plan_push(status.model_dir, repo_id.strip()), token=token.strip(), private=bool(private))
    except Exception as e:  # noqa: BLE001 - any Hub failure is one line for the user (never the token)
        message = str(e).replace(token.strip(), "***").splitlines()[0] if str(e) else type(e).__name__
        raise gr.Error(f"Push failed: {message}") from None
    return f"Pushed to https://huggingface.co/{repo_id.strip()}"


# ---------------------------------------------------------------- the page

def build() -> gr.Blocks:
    sample_choices, blob_choices, classify_choices = (model_choices(*TAB_NEEDS[tab])
                                                      for tab in ("sample", "blobs", "classify"))
    examples = example_images()
    with gr.Blocks(title="GAN Lab") as demo:
        gr.Markdown("# GAN Lab\nTrain GANs on your images, sample and edit them, and sort images into "
                    "clusters without labels." + (" *Public mode: limited training.*" if PUBLIC else ""))
        with gr.Accordion("Open a model: a checkpoint zip" + ("" if PUBLIC else ", or a folder on this machine"),
                          open=False):
            gr.Markdown("Upload a checkpoint zip (the Train tab's download, or any GAN Lab checkpoint folder "
                        "zipped) and it joins the model pickers." + ("" if PUBLIC else
                        " A command-line run opens too: type its run folder (or one of its checkpoint folders) "
                        "into any model picker, e.g. `runs/shapes`."))
            model_zip = File(label="Checkpoint zip", file_types=[".zip"], elem_id="model-zip")
            model_zip_status = gr.Markdown()
        with gr.Tabs(selected="sample"):  # a visitor sees samples first
            with gr.Tab("Train", id="train"):
                with gr.Row():
                    dataset = gr.Dropdown(DATASETS, value="shapes", label="Dataset",
                                          info="Built-in shapes/scenes, Fashion-MNIST, your upload, or a Hub id / parquet")
                    kind = gr.Dropdown(list(kinds.KINDS), value=kinds.DEFAULT_KIND, label="Model kind",
                                       info="dcgan: samples; cluster: sorts images into K groups; blobgan: editable layouts")
                    name = gr.Textbox(label="Model name", placeholder="(automatic)",
                                      info="How the model is listed in the pickers")
                # Shown and hidden through their columns: Gradio rebuilds a widget that gets a property
                # update from its plain class, which would drop the one-line error wrapper.
                with gr.Column(visible=False) as upload_box:
                    upload = File(label="Images or zips (for 'upload')", file_count="multiple")
                with gr.Column(visible=False) as text_box:
                    text = gr.Textbox(label="Hub dataset id or parquet path")
                with gr.Row():
                    steps = Number(value=500, precision=0, label="Steps", info="Training updates; each sees one batch")
                    batch = Number(value=64, precision=0, label="Batch size", info="Images per step")
                    lr = Number(value=2e-4, label="Learning rate", info="Adam's step size (2e-4 as in DCGAN)")
                    size = gr.Dropdown([32, 64], value=32, label="Image size", info="Pixels a side; 32 trains about 4x faster")
                    channels = gr.Radio([1, 3], value=3, label="Channels", info="1: greyscale, 3: colour")
                    k = Number(value=10, precision=0, label="K (cluster)", info="How many clusters a cluster model finds")
                with gr.Row():
                    start = gr.Button("Start", variant="primary")
                    stop = gr.Button("Stop", variant="secondary")  # not red while nothing runs
                status = gr.Markdown(JOB.status().summary())
                with gr.Row():
                    losses = gr.LinePlot(x="step", y="value", color="loss", label="Losses", height=260)
                    samples = gr.Image(label="Samples", type="pil", format="png", interactive=False)
                with gr.Column(visible=False) as zip_box:  # shown once there is a checkpoint (no empty box)
                    checkpoint_zip = File(label="Finished checkpoint (zip)", interactive=False)
                with gr.Accordion("Push the trained model to the Hugging Face Hub", open=False):
                    with gr.Row():
                        repo = gr.Textbox(label="Repo id", placeholder="user/name")
                        token = gr.Textbox(label="Token (used once, never stored)", type="password")
                        hub_private = gr.Checkbox(value=True, label="Private")
                    push = gr.Button("Push")
                    push_status = gr.Markdown()

            with gr.Tab("Sample", id="sample"):
                with gr.Row():
                    sample_default = default_model("sample", sample_choices)
                    s_model = gr.Dropdown(sample_choices, value=sample_default, label="Model", allow_custom_value=True)
                    seed = Number(value=0, precision=0, label="Seed")
                    dice = gr.Button("Random seed", scale=0)
                    count = Slider(1, 64, value=16, step=1, label="How many")
                    truncation = Slider(0.0, 2.0, value=1.0, step=0.05, label="Truncation")
                    code = gr.Dropdown(["random"], value="random", label="Cluster code", visible=False)
                quality = gr.Markdown(quality_text(sample_default), elem_id="sample-quality")
                with gr.Accordion("Latent sliders (principal directions, GANSpace)", open=False):
                    raw_z = gr.Checkbox(value=False, label="Raw z (slider i moves z[i] instead)")
                    sliders = []
                    for first in range(0, N_SLIDERS, 4):  # two even rows of four (eight in one row wrap unevenly)
                        with gr.Row():
                            sliders += [Slider(-3, 3, value=0, step=0.1, label=f"direction {i + 1}")
                                        for i in range(first, min(first + 4, N_SLIDERS))]
                with gr.Row():
                    go = gr.Button("Sample", variant="primary", elem_id="sample-button")
                    as_gallery = gr.Checkbox(value=False, label="Also as a gallery")
                    refine = Slider(0, REFINE_MAX, value=refine_default(sample_default), step=5,
                                    label="Refine with D (steps; slower)",
                                    info="moves each latent to where the discriminator finds its image more real; "
                                         "each model opens with the steps its sample quality was measured with, "
                                         "and always refines by its own step size")
                grid = gr.Image(label="Samples", type="pil", format="png", interactive=False, elem_id="sample-grid")
                gallery = gr.Gallery(label="Single images", columns=8, visible=False)
                with gr.Accordion("Interpolate between two seeds", open=False):
                    with gr.Row():
                        seed_a = Number(value=0, precision=0, label="Seed A")
                        seed_b = Number(value=1, precision=0, label="Seed B")
                        frames = Slider(2, 32, value=8, step=1, label="Frames")
                        go_interp = gr.Button("Interpolate")
                    strip = gr.Image(label="Frames", type="pil", format="png", interactive=False)
                    gif = gr.Image(label="Animated GIF (plays here; download it with the button)", type="filepath",
                                   interactive=False, elem_id="interp-gif")  # served as the file: it animates inline

            with gr.Tab("Blobs", id="blobs"):
                with gr.Row():
                    b_model = gr.Dropdown(blob_choices, value=default_model("blobs", blob_choices), label="BlobGAN model",
                                          allow_custom_value=True)
                    b_seed = Number(value=0, precision=0, label="Seed")
                    b_go = gr.Button("Sample a layout", variant="primary", elem_id="blobs-button")
                with gr.Row():
                    b_image = gr.Image(label="Image (click a blob to pick it)", type="pil", interactive=False,
                                       elem_id="blob-image")
                    b_map = gr.Image(label="Blob map", type="pil", interactive=False)
                    b_ellipses = gr.Image(label="Blobs", type="pil", interactive=False)
                with gr.Row():
                    blob = gr.Dropdown([(f"blob {i}", i) for i in range(8)], value=0, label="Blob")
                    action = gr.Radio(["move", "resize", "hide", "show", "restyle", "depth"], value="move", label="Edit")
                with gr.Row():
                    dx = Slider(-0.5, 0.5, value=0.1, step=0.01, label="dx")
                    dy = Slider(-0.5, 0.5, value=0.0, step=0.01, label="dy")
                    ds = Slider(-4, 4, value=1.0, step=0.1, label="size change")
                    depth = Slider(0, 7, value=7, step=1, label="depth (slot)")
                    style_seed = Number(value=1, precision=0, label="style from seed")
                with gr.Row():
                    apply = gr.Button("Apply edit", elem_id="apply-edit")
                    local = gr.Checkbox(value=True, label="Repaint only what the edit touches",
                                        info="Off: the generator draws the whole picture again")
                with gr.Row():
                    to_invert = ImageInput(label="Invert an image into a layout", type="pil", elem_id="invert-image")
                    b_invert = gr.Button("Invert")
                invert_examples = gr.Examples([[p] for p, _ in examples["blobs"]], [to_invert],
                                              label="Built-in scenes (click one to invert it)", api_name=None, elem_id="invert-examples",
                                              api_visibility="private") if examples["blobs"] else None
                layout = JSON(label="Layout", visible=False)

            with gr.Tab("Classify", id="classify"):
                c_model = gr.Dropdown(classify_choices, value=default_model("classify", classify_choices),
                                      label="Cluster model", allow_custom_value=True)
                with gr.Row():
                    c_image = ImageInput(label="One image", type="pil", elem_id="classify-image")
                    with gr.Column():
                        c_label = gr.Label(num_top_classes=3, label="Cluster", elem_id="classify-label")
                        c_top = gr.Markdown(elem_id="classify-verdict")
                classify_examples = gr.Examples([[p] for p, _ in examples["classify"]], [c_image],
                                                label=" + ".join(dict.fromkeys(c + "s" for _, c in examples["classify"]))
                                                + " (click one to classify it; a shape is no garment, so the "
                                                  "Fashion-MNIST model is unsure of it)", elem_id="classify-examples",
                                                api_name=None, api_visibility="private") if examples["classify"] else None
                c_go = gr.Button("Classify", variant="primary", elem_id="classify-button")
                c_files = File(label="Many images or zips", file_count="multiple")
                c_batch = gr.Button("Classify all")
                with gr.Row():
                    c_table = Dataframe(headers=["file", "cluster", "confidence", "top 3"], label="Per image",
                                           interactive=False)
                    c_counts = Dataframe(headers=["cluster", "images"], label="Per cluster", interactive=False)
                with gr.Column(visible=False) as csv_box:  # shown once there is a CSV (no empty box)
                    c_csv = File(label="Assignments (CSV)", interactive=False)
                with gr.Accordion("Clusters: exemplars and names", open=False):
                    with gr.Row():
                        c_cluster = gr.Dropdown([], label="Cluster")
                        c_show = gr.Button("Show exemplars")
                    c_gallery = gr.Gallery(label="Exemplars: training images, then generated", columns=8)
                    c_names = Dataframe(headers=["cluster", "name"], label="Names (edit, then save)",
                                           interactive=not PUBLIC)
                    c_save = gr.Button("Save names", visible=not PUBLIC)
                    c_saved = gr.Markdown()

        # ---- events
        private = {"api_visibility": "private"}
        dataset.change(lambda d: (gr.update(visible=d == "upload"), gr.update(visible=d in ("Hub dataset", "parquet path"))),
                       dataset, [upload_box, text_box], **private)
        # the channels follow a dataset the visitor picks (not one filled in from a running job's settings)
        dataset.input(lambda d: gr.update(value=1 if d == "fashion-mnist" else 3), dataset, channels, **private)
        start.click(start_training, [dataset, upload, text, kind, steps, batch, lr, size, channels, k, name],
                    [status, losses, samples, checkpoint_zip], api_name="train", concurrency_limit=None
                    ).then(refresh_pickers, [s_model, b_model, c_model], [s_model, b_model, c_model], **private)
        stop.click(stop_training, None, status, api_name="stop")
        gr.Timer(2.0).tick(job_view, None, [status, losses, samples, checkpoint_zip], **private)
        checkpoint_zip.change(lambda f: gr.update(visible=bool(f)), checkpoint_zip, zip_box, **private)
        push.click(push_to_hub, [repo, token, hub_private], push_status, api_name="push_to_hub")

        sample_inputs = [s_model, seed, count, truncation, code, raw_z, as_gallery, *sliders, refine]
        go.click(sample_images, sample_inputs, [grid, gallery], api_name="sample")
        # Live: a redraw takes well under a second (seconds with Refine with D), so every control redraws on
        # its own (Enter in the seed box, a slider let go, another model or code); only the latest of a burst
        # of changes is drawn.
        gr.on([seed.submit, count.release, truncation.release, code.change, raw_z.change,
               as_gallery.change, refine.release, *(slider.release for slider in sliders)],
              sample_images, sample_inputs, [grid, gallery], trigger_mode="always_last", **private)
        # another model opens with its own default draw: its Refine-with-D steps first, then the redraw
        s_model.change(refine_default, s_model, refine, trigger_mode="always_last", **private).then(
            sample_images, sample_inputs, [grid, gallery], **private)
        as_gallery.change(lambda on: gr.update(visible=bool(on)), as_gallery, gallery, **private)
        dice.click(lambda: int(torch.randint(0, 2**31 - 1, ()).item()), None, seed, **private).then(
            sample_images, sample_inputs, [grid, gallery], **private)
        s_model.change(code_choices, s_model, code, **private)
        s_model.change(quality_text, s_model, quality, **private)
        go_interp.click(interpolate, [s_model, seed_a, seed_b, frames, truncation, code], [strip, gif],
                        api_name="interpolate")

        blob_outputs = [b_image, b_map, b_ellipses, layout, blob]
        b_go.click(sample_blobs, [b_model, b_seed], blob_outputs, api_name="blobs")
        apply.click(edit_blob, [b_model, layout, blob, action, dx, dy, ds, depth, style_seed, local, b_image], blob_outputs,
                    api_name="edit_blob")
        b_invert.click(invert_image, [b_model, to_invert], blob_outputs, api_name="invert")
        b_image.select(pick_blob, [b_model, layout], blob, **private)

        c_go.click(classify, [c_model, c_image], [c_label, c_top], api_name="classify")
        # An upload is classified at once; clearing the image clears its result (never a stale one beside a new image).
        c_image.upload(classify, [c_model, c_image], [c_label, c_top], trigger_mode="always_last", **private)
        c_image.clear(lambda: (None, ""), None, [c_label, c_top], **private)
        if classify_examples is not None:  # an example clicked is classified like an upload
            classify_examples.load_input_event.then(classify, [c_model, c_image], [c_label, c_top], **private)
        if invert_examples is not None:
            invert_examples.load_input_event.then(invert_image, [b_model, to_invert], blob_outputs, **private)
        c_batch.click(classify_batch, [c_model, c_files], [c_table, c_counts, c_csv], api_name="classify_batch")
        c_csv.change(lambda f: gr.update(visible=bool(f)), c_csv, csv_box, **private)
        c_model.change(cluster_names, c_model, [c_names, c_cluster], **private)
        c_show.click(exemplar_gallery, [c_model, c_cluster], c_gallery, **private)
        c_save.click(save_cluster_names, [c_model, c_names], [c_saved, c_cluster], **private)

        model_zip.upload(open_model_zip, [model_zip, s_model, b_model, c_model],
                         [model_zip_status, s_model, b_model, c_model], **private)
        # Every page load reads the model folders again: a model saved since the server started (by any
        # visitor, or a run copied in) is in every picker after a reload.
        demo.load(refresh_pickers, [s_model, b_model, c_model], [s_model, b_model, c_model], **private)
        known_models = gr.State(None)  # this page's view of the model folders, for the timer below
        gr.Timer(PICKER_POLL_S).tick(pickers_if_changed, [known_models, s_model, b_model, c_model],
                                     [known_models, s_model, b_model, c_model], **private)
        # A visitor who arrives during a job sees it at once: its progress, and its settings in the form.
        demo.load(job_view, None, [status, losses, samples, checkpoint_zip], **private)
        demo.load(job_form, None, [dataset, kind, steps, batch, lr, size, channels, k, name], **private)
        demo.load(sample_images, sample_inputs, [grid, gallery], **private)
        if blob_choices:
            demo.load(sample_blobs, [b_model, b_seed], blob_outputs, **private)
        if classify_choices:
            demo.load(cluster_names, c_model, [c_names, c_cluster], **private)
    return demo


if __name__ == "__main__":
    build().queue(default_concurrency_limit=4).launch(
        max_file_size=f"{MAX_UPLOAD_MB:g}mb" if MAX_UPLOAD_MB else None, mcp_server=MCP)
