#!/usr/bin/env bash
# GPU checks in one go (target: well under 8 minutes on one H100/H200):
#   scripts/gpu_check.sh OUT_DIR
# 1. the CUDA tests, 2. the CUDA benchmark at batch 128 (reference vs fast, then fast + torch.compile),
# 3. a short CUDA training of the default model. Results (JSON, logs, small checkpoints) go to OUT_DIR.
set -uo pipefail
OUT_DIR=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT_DIR"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >> "$OUT_DIR/gpu.txt" 2>&1

timeout 120 python -m pytest -q tests/test_cuda.py 2>&1 | tee "$OUT_DIR/cuda_tests.txt" | tail -3
timeout 150 python scripts/benchmark.py --device cuda --steps 300 --batch 128 2> "$OUT_DIR/benchmark.err" \
  | tail -1 | tee "$OUT_DIR/benchmark_b128.json"
timeout 150 python scripts/benchmark.py --device cuda --steps 500 --batch 128 --compile --skip-reference \
  2> "$OUT_DIR/benchmark_compile.err" | tail -1 | tee "$OUT_DIR/benchmark_b128_compile.json"
timeout 150 python scripts/train.py train.device=cuda train.steps=3000 train.batch_size=128 train.ema_decay=0.999 \
  train.log_every=100 train.sample_every=1000 train.checkpoint_every=1000 train.out_dir="$OUT_DIR/shapes-dcgan-cuda" \
  2> "$OUT_DIR/train.err" | tail -1 | tee "$OUT_DIR/train.json"
rm -f "$OUT_DIR"/shapes-dcgan-cuda/checkpoints/*/optimizer.safetensors
echo "gpu_check done: $(ls "$OUT_DIR")"
