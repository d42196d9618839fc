#!/usr/bin/env python
"""Print the speed rows of a `scripts/gpu_check.sh` results.jsonl as one Markdown table.

    python -m scripts.speed_table gpu_out/results.jsonl

One row per `bench_*` part (scripts.benchmark's JSON): the path, img/s, speedup over the tutorial's
loop measured in the same script run, and the mean losses. The last stdout line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from scripts._cli import fail


def rows(lines: list[str]) -> tuple[list[dict], float | None]:
    out, reference = [], None
    for line in lines:
        try:
            part = json.loads(line)
        except ValueError:
            continue
        name = str(part.get("part", ""))
        if not name.startswith("bench_"):
            continue
        r = part.get("result") or {}
        if r.get("reference_img_s"):
            reference = float(r["reference_img_s"])
        out.append({"path": name[len("bench_"):], "error": part.get("error"), **r})
    return out, reference


def table(items: list[dict], reference: float | None) -> str:
    head = ["path", "precision", "memory format", "step", "img/s", "x tutorial", "loss D / G"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    if reference:
        lines.append(f"| tutorial (fp32, NCHW, DataLoader) | fp32 | NCHW | eager | {reference:,.0f} | 1.00 | |")
    for r in items:
        if r.get("error") or "fast_img_s" not in r:
            lines.append(f"| {r['path']} | | | | failed: {r.get('error') or 'no result'} | | |")
            continue
        graph = "graph step, CPU dry run" if "dry run" in str(r.get("cuda_graph_why")) else "one CUDA graph"
        step = graph if r.get("cuda_graph") else (f"compiled ({r.get('compile_mode')})" if r.get("compile")
                                                              else "eager")
        speedup = f"{r['fast_img_s'] / reference:.2f}" if reference else ""
        fmt = "channels_last" if r.get("fast_channels_last") else "NCHW"
        lines.append(f"| {r['path']} ({r.get('chosen_by', '')}) | {r.get('fast_precision')} | {fmt} | {step} | "
                     f"{r['fast_img_s']:,.0f} | {speedup} | {r.get('fast_loss_d')} / {r.get('fast_loss_g')} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="results.jsonl from scripts/gpu_check.sh")
    args = p.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        fail(f"no such file: {path}")
    items, reference = rows(path.read_text().splitlines())
    print(table(items, reference))
    best = max((r for r in items if "fast_img_s" in r), key=lambda r: r["fast_img_s"], default=None)
    result = {"rows": len(items), "reference_img_s": reference,
              "best": best and {"path": best["path"], "img_s": best["fast_img_s"],
                                "speedup": round(best["fast_img_s"] / reference, 2) if reference else None}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
