#!/usr/bin/env python
"""How fast the app answers, on the CPU and the bundled models.

1. Start-up: seconds from `python app.py` (a subprocess) to the page answering HTTP 200.
2. Handler compute, in-process (medians of repeated calls after a warm-up): `/sample` of 16 images,
   `/classify` of one image, `/blobs`.
3. Round trips through gradio_client for the same three, beside the round trip of a trivial handler
   with the same output components returning same-sized values (Gradio's own floor), in the same run.
4. A live slider drag: 20 consecutive redraws of the Sample tab's 16 images, each with the first
   direction slider at a new value (what letting go of the slider asks for), in-process and through
   gradio_client; their 95th percentiles beside the floor's.

    python -m scripts.benchmark_app [--repeats 20]

Last line: one JSON object. Targets (issue 5, these CPUs): start < 10 s; compute < 100 / 30 / 150 ms;
round trip <= 1.5x the floor; a slider drag's p95 compute < 100 ms and p95 round trip <= 1.5x the floor's p95.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # app.py's folder: `python app.py` starts there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def startup_seconds(timeout: float = 120.0) -> float:
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited with code {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"the page did not answer within {timeout} s")
    finally:
        proc.terminate()
        proc.wait(10)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (model load, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def p95_ms(fns, warm_up) -> float:
    """The 95th percentile (ms) of calling each of `fns` once, in order (after one `warm_up` call that is
    not one of them, so nothing timed is a repeat)."""
    warm_up()
    times = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.quantiles(times, n=20, method="inclusive")[-1], 2)


DRAG = [round(-3 + 6 * i / 19, 2) for i in range(20)]  # the first slider swept from -3 to 3 in 20 changes


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--skip-startup", action="store_true")
    args = p.parse_args(argv)

    import gradio as gr
    import torch
    from gradio_client import Client, handle_file
    from PIL import Image

    import app
    from gan_core.inference.blobs import BlobModel
    from gan_core.inference.cluster import ClusterModel

    torch.set_num_threads(max(1, torch.get_num_threads()))
    result: dict = {"device": app.DEVICE, "threads": torch.get_num_threads(), "repeats": args.repeats}
    if not args.skip_startup:
        result["startup_s"] = round(startup_seconds(), 2)

    sample_model = app.default_model("sample", app.model_choices())
    blob_model = app.default_model("blobs", app.model_choices(BlobModel))
    cluster_model = app.default_model("classify", app.model_choices(ClusterModel))
    zeros = (0,) * app.N_SLIDERS
    photo = Path(__import__("tempfile").mkdtemp()) / "photo.png"
    Image.new("RGB", (64, 64), (200, 200, 200)).save(photo)
    pil = Image.open(photo).convert("RGB")

    calls = {
        "sample": (lambda: app.sample_images(sample_model, 0, 16, 1.0, "random", False, False, *zeros)),
        "classify": (lambda: app.classify(cluster_model, pil)),
    }
    if blob_model:
        calls["blobs"] = lambda: app.sample_blobs(blob_model, 0)
    compute = {name: median_ms(fn, args.repeats) for name, fn in calls.items()}
    result["compute_ms"] = compute
    drag_compute = p95_ms([lambda a=a: app.sample_images(sample_model, 0, 16, 1.0, "random", False, False, a,
                                                         *zeros[1:]) for a in DRAG],
                          lambda: app.sample_images(sample_model, 1, 16, 1.0, "random", False, False, 0.05, *zeros[1:]))

    # Round trips: the app, and a floor app whose handlers return ready-made values of the same
    # components and sizes.
    grid, _ = calls["sample"]()
    labels, top = calls["classify"]()
    blob_out = calls["blobs"]() if blob_model else None
    with gr.Blocks() as floor:
        f_model = gr.Textbox()
        f_grid, f_gallery = gr.Image(type="pil", format="png"), gr.Gallery()
        f_label, f_top = gr.Label(), gr.Markdown()
        f_b = [gr.Image(type="pil"), gr.Image(type="pil"), gr.Image(type="pil"), gr.JSON(), gr.Dropdown(choices=list(range(64)))]
        f_image = gr.Image(type="pil")
        gr.Button().click(lambda m: (grid, None), f_model, [f_grid, f_gallery], api_name="sample")
        gr.Button().click(lambda m, im: (labels, top), [f_model, f_image], [f_label, f_top], api_name="classify")
        if blob_out:
            gr.Button().click(lambda m: blob_out, f_model, f_b, api_name="blobs")
    served = app.build()
    served.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    floor.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        c_app = Client(served.local_url, verbose=False)
        c_floor = Client(floor.local_url, verbose=False)
        trips = {
            "sample": (lambda: c_app.predict(sample_model, 0, 16, 1.0, "random", False, False, *zeros, api_name="/sample"),
                       lambda: c_floor.predict("x", api_name="/sample")),
            "classify": (lambda: c_app.predict(cluster_model, handle_file(str(photo)), api_name="/classify"),
                         lambda: c_floor.predict("x", handle_file(str(photo)), api_name="/classify")),
        }
        if blob_out:
            trips["blobs"] = (lambda: c_app.predict(blob_model, 0, api_name="/blobs"),
                              lambda: c_floor.predict("x", api_name="/blobs"))
        round_trip = {}
        for name, (real, trivial) in trips.items():
            r, f = median_ms(real, args.repeats), median_ms(trivial, args.repeats)
            round_trip[name] = {"app_ms": r, "floor_ms": f, "ratio": round(r / f, 3)}
        result["round_trip"] = round_trip
        drag_app = p95_ms([lambda a=a: c_app.predict(sample_model, 0, 16, 1.0, "random", False, False, a, *zeros[1:],
                                                     api_name="/sample") for a in DRAG],
                          lambda: c_app.predict(sample_model, 1, 16, 1.0, "random", False, False, 0.05, *zeros[1:],
                                                api_name="/sample"))
        drag_floor = p95_ms([lambda: c_floor.predict("x", api_name="/sample")] * len(DRAG),
                            lambda: c_floor.predict("y", api_name="/sample"))
        result["slider_drag"] = {"changes": len(DRAG), "compute_p95_ms": drag_compute, "app_p95_ms": drag_app,
                                 "floor_p95_ms": drag_floor, "ratio": round(drag_app / drag_floor, 3)}
    finally:
        served.close()
        floor.close()
    targets = {"sample": 100, "classify": 30, "blobs": 150}
    result["meets"] = {
        "startup": result.get("startup_s", 0) < 10,
        **{f"compute_{k}": v < targets[k] for k, v in compute.items()},
        **{f"round_trip_{k}": v["ratio"] <= 1.5 for k, v in result["round_trip"].items()},
        "slider_drag_compute": result["slider_drag"]["compute_p95_ms"] < 100,
        "slider_drag_round_trip": result["slider_drag"]["ratio"] <= 1.5,
    }
    result["models"] = {"sample": sample_model, "classify": cluster_model, "blobs": blob_model}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
