#!/usr/bin/env python
"""Load test: concurrent gradio_client clients mixing /sample, /classify and /blobs against the app
while a training job runs; every request must succeed.

    python -m scripts.load_test --clients 20 --seconds 60          # serves app.py in-process
    python -m scripts.load_test --url http://127.0.0.1:7860        # an app already running

Last line: {"clients", "seconds", "count", "errors", "p50_ms", "p95_ms", "per_endpoint", "training"}.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--url", default=None, help="an app already serving (default: start app.py in-process)")
    p.add_argument("--train-steps", type=int, default=100_000, help="the background training job's steps")
    p.add_argument("--no-training", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from gradio_client import Client, handle_file
    from PIL import Image

    import app
    from gan_core.inference.blobs import BlobModel
    from gan_core.inference.cluster import ClusterModel

    served = None
    if args.url is None:
        served = app.build()
        served.queue(default_concurrency_limit=4).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        url = served.local_url
    else:
        url = args.url
    photo = Path(tempfile.mkdtemp(prefix="ganlab-load-")) / "photo.png"
    Image.new("RGB", (48, 48), (30, 120, 200)).save(photo)
    sample_model = app.default_model("sample", app.model_choices())
    cluster_model = app.default_model("classify", app.model_choices(ClusterModel))
    blob_model = app.default_model("blobs", app.model_choices(BlobModel))
    zeros = (0,) * app.N_SLIDERS

    training = None
    if not args.no_training:
        trainer = Client(url, verbose=False)
        job = trainer.submit("shapes", None, "", "dcgan", args.train_steps, 32, 2e-4, 32, 3, 10,
                             f"load-test-{int(time.time())}", api_name="/train")
        training = {"started": True}
        if served is not None:  # in-process: start the clock once the job trains (past its data loading)
            t0 = time.time()
            while app.JOB.status().step == 0 and app.JOB.status().state in ("loading", "training", "idle") \
                    and time.time() - t0 < 300:
                time.sleep(0.5)

    results: list[tuple[str, float, str | None]] = []
    lock = threading.Lock()
    deadline = time.time() + args.seconds  # set after the job is training

    def worker(i: int) -> None:
        rng = random.Random(args.seed * 1000 + i)
        client = Client(url, verbose=False)
        while time.time() < deadline:
            choice = rng.choice(["sample", "classify", "blobs"] if blob_model else ["sample", "classify"])
            t0 = time.perf_counter()
            error = None
            try:
                if choice == "sample":
                    client.predict(sample_model, rng.randrange(10_000), 16, 1.0, "random", False, False, *zeros,
                                   api_name="/sample")
                elif choice == "classify":
                    client.predict(cluster_model, handle_file(str(photo)), api_name="/classify")
                else:
                    client.predict(blob_model, rng.randrange(10_000), api_name="/blobs")
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                error = f"{type(e).__name__}: {str(e)[:200]}"
            with lock:
                results.append((choice, (time.perf_counter() - t0) * 1000, error))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 120)
    if training is not None:
        status = app.JOB.status() if served is not None else None
        trainer.predict(api_name="/stop")
        if status is not None:
            training.update(state=status.state, step=status.step, images_per_s=round(status.images_per_s, 1))
        try:
            job.result(timeout=120)
        except Exception:  # noqa: BLE001 - a stopped job may end its stream either way
            pass
    if served is not None:
        app.JOB.wait(120)
        served.close()

    ok = [ms for _, ms, err in results if err is None]
    errors = [err for _, _, err in results if err is not None]
    per_endpoint = {}
    for name in ("sample", "classify", "blobs"):
        times = [ms for n, ms, err in results if n == name and err is None]
        if times or any(n == name for n, _, _ in results):
            per_endpoint[name] = {"count": sum(1 for n, _, _ in results if n == name),
                                  "errors": sum(1 for n, _, err in results if n == name and err),
                                  "p50_ms": round(statistics.median(times), 1) if times else None,
                                  "p95_ms": round(percentile(times, 0.95), 1) if times else None}
    out = {"clients": args.clients, "seconds": args.seconds, "count": len(results), "errors": len(errors),
           "p50_ms": round(statistics.median(ok), 1) if ok else None, "p95_ms": round(percentile(ok, 0.95), 1),
           "per_endpoint": per_endpoint, "training": training, "first_errors": errors[:3]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
