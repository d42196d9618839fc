#!/usr/bin/env bash
# GPU checks in one go (target: well under 8 minutes on one H100/H200):
#   scripts/gpu_check.sh OUT_DIR
# 1. the CUDA tests, 2. the CUDA benchmark at batch 128 (reference vs fast, then fast + torch.compile),
# 3. a short CUDA training of the default model, 4. Fashion-MNIST clustering when its files are there. Results (JSON, logs, small checkpoints) go to OUT_DIR.
# Needs only torch, torchvision, safetensors, numpy, pillow, tqdm and pytest (the lent GPU image has
# them all); the training step calls gan_core directly, so Hydra need not be installed there.
set -uo pipefail
OUT_DIR=${1:-${OUT:-gpu_out}}
PY=${PYTHON:-python3}
OUT_DIR=$(mkdir -p "$OUT_DIR" && cd "$OUT_DIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 GANLAB_CACHE="$OUT_DIR/.cache"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu.txt" 2>&1
$PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >> "$OUT_DIR/gpu.txt" 2>&1
cat "$OUT_DIR/gpu.txt"

timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT_DIR/cuda_tests.txt" | tail -3
timeout 120 $PY scripts/benchmark.py --device cuda --steps 300 --batch 128 2> "$OUT_DIR/benchmark.err" \
  | tail -1 | tee "$OUT_DIR/benchmark_b128.json"
timeout 120 $PY scripts/benchmark.py --device cuda --steps 1000 --batch 128 --skip-reference \
  2> "$OUT_DIR/benchmark_fast.err" | tail -1 | tee "$OUT_DIR/benchmark_b128_fast_long.json"
timeout 150 $PY scripts/benchmark.py --device cuda --steps 1000 --batch 128 --compile --skip-reference \
  2> "$OUT_DIR/benchmark_compile.err" | tail -1 | tee "$OUT_DIR/benchmark_b128_compile.json"
timeout 120 $PY - "$OUT_DIR" <<'PYEOF' 2> "$OUT_DIR/train.err" | tail -1 | tee "$OUT_DIR/train.json"
import json, sys
from pathlib import Path
sys.path.insert(0, ".")
from gan_core.config import DataConfig, DCGANConfig, RunConfig, TrainConfig
from gan_core.train import train
from gan_core.viz import image_grid
out = Path(sys.argv[1]) / "shapes-dcgan-cuda"
cfg = RunConfig(model=DCGANConfig(ngf=32, ndf=32), data=DataConfig(source="shapes", num_images=20000),
                train=TrainConfig(steps=5000, batch_size=64, device="cuda", ema_decay=0.999, real_label=0.9,
                                  instance_noise=0.1, instance_noise_steps=4000, log_every=250,
                                  sample_every=1000, checkpoint_every=1000, out_dir=str(out)))
result = train(cfg, on_sample=lambda s, x: image_grid(x, 8).save(out / f"samples_{s:06d}.png"))
print(json.dumps(result))
PYEOF
# 4. Fashion-MNIST clustering on the GPU, when the IDX files travelled with the tree (git-ignored
#    data/fashion-mnist, sent with the device tool's `carry`) or sit where Debian puts them.
FMNIST=${GANLAB_FMNIST:-data/fashion-mnist}
[ -e "$FMNIST/t10k-images-idx3-ubyte.gz" ] || FMNIST=/usr/share/datasets/fashion-mnist
if [ -e "$FMNIST/t10k-images-idx3-ubyte.gz" ]; then
  timeout 240 $PY - "$OUT_DIR" "$FMNIST" <<'PYEOF' 2> "$OUT_DIR/fmnist.err" | tail -1 | tee "$OUT_DIR/fmnist_clusters.json"
import json, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from gan_core import metrics
from gan_core.cluster import ClusterModel
from gan_core.config import ClusterConfig, DataConfig, RunConfig, TrainConfig
from gan_core.data import load_dataset
from gan_core.train import train
out, path = Path(sys.argv[1]) / "fmnist-clusters-cuda", sys.argv[2]
data = DataConfig(source="idx", path=path, image_size=32, channels=1)
cfg = RunConfig(model=ClusterConfig(k=10, ngf=32, ndf=32), data=data,
                train=TrainConfig(steps=20000, batch_size=64, device="cuda", ema_decay=0.999, log_every=500,
                                  checkpoint_every=5000, keep_checkpoints=8, out_dir=str(out)))
t0 = time.time()
result = train(cfg)
test = load_dataset(DataConfig(source="idx", path=path, split="test", image_size=32, channels=1))
pred = ClusterModel.load(result["checkpoint"], "cuda").predict(test.images)
result.update({k: round(v, 4) for k, v in metrics.clustering_scores(test.labels.numpy(), pred.ids.numpy()).items()},
              wall_s=round(time.time() - t0, 1))
print(json.dumps(result))
PYEOF
fi
rm -f "$OUT_DIR"/fmnist-clusters-cuda/checkpoints/*/optimizer.safetensors
rm -f "$OUT_DIR"/shapes-dcgan-cuda/checkpoints/*/optimizer.safetensors
rm -rf "$OUT_DIR/.cache"
echo "gpu_check done: $(ls "$OUT_DIR" | tr '\n' ' ')"
