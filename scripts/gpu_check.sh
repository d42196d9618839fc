#!/usr/bin/env bash
# GPU checks in one go, about 8.5 minutes on one H100/H200:  bash scripts/gpu_check.sh OUT_DIR
# (from any folder: it runs the scripts as modules, `python -m scripts.NAME`, from the repository root)
#  1. GPU to itself: the speed table at batch 128 (the tutorial; gan_core's default, chosen by timing;
#     bf16 / fp16, NCHW / channels_last, eager / one CUDA graph / torch.compile), and a profile.
#  2. Side by side until one deadline: clustering runs (scripts.cluster_run, batch 256, 2 IIC views
#     per image: Fashion-MNIST seed 1, and three seeds of built-in shapes at 64 px with the mask input), a BlobGAN on scenes
#     (then its inversion encoder and scripts.evaluate_blobs), the CUDA tests, and a short CUDA
#     training of the default DCGAN.
#  3. Each clustering run scores its checkpoints on the test split and exports its last one (fp16 .tar).
# OUT_DIR gets at most 8 files (the device tool's limit): results.jsonl (one JSON object per part),
# logs.tar.gz (logs, the speed table, the profile's ops.txt and trace.json, the DCGAN run's samples and
# fp16 checkpoint), fmnist_*.tar, shapes_*.tar and
# scenes_blobgan.tar.
# Needs only torch, torchvision, numpy, pillow, safetensors, scipy, scikit-learn, tqdm and pytest (the
# lent GPU image has them); no Hydra. Fashion-MNIST: data/fashion-mnist (git-ignored; send it with the
# device tool's `carry`) or /usr/share/datasets/fashion-mnist.
# Knobs: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 runs the same plumbing on a CPU (a few minutes);
# GPU_CHECK_FMNIST=0 skips the clustering runs; GPU_CHECK_BUDGET_S sets the deadline (default 500).
set -uo pipefail
OUT_DIR=${1:-${OUT:-gpu_out}}
PY=${PYTHON:-python3}
DEV=${GPU_CHECK_DEVICE:-cuda}
SMOKE=${GPU_CHECK_SMOKE:-0}
BUDGET_S=${GPU_CHECK_BUDGET_S:-500}  # the whole script ends by about this many seconds
T0=$(date +%s)
OUT_DIR=$(mkdir -p "$OUT_DIR" && cd "$OUT_DIR" && pwd)
cd "$(dirname "$0")/.."
LOG="$OUT_DIR/logs"
mkdir -p "$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # gan_core and scripts import from the repository root
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 GANLAB_CACHE="$LOG/.cache"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"
record() {  # record NAME FILE: append FILE's last line, tagged, to results.jsonl
  local line; line=$(tail -n 1 "$2" 2>/dev/null)
  case "$line" in
    "{"*) echo "{\"part\": \"$1\", \"result\": $line}" >> "$RESULTS" ;;
    *) echo "{\"part\": \"$1\", \"error\": \"no JSON result; see logs/$(basename "$2")\"}" >> "$RESULTS" ;;
  esac
}
elapsed() { echo $(( $(date +%s) - T0 )); }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
  nproc; } > "$LOG/gpu.txt" 2>&1
cat "$LOG/gpu.txt"
echo "{\"part\": \"machine\", \"result\": $(python3 -c "import json,sys; print(json.dumps(open(sys.argv[1]).read()))" "$LOG/gpu.txt")}" >> "$RESULTS"

# 1. The speed table, alone on the GPU (issue 14): the tutorial vs gan_core's default (everything
#    `auto`: precision, memory format and CUDA graph chosen by timing them), then each path by hand,
#    then a profile of the default step. scripts.speed_table prints them as one table.
if [ "$SMOKE" = 1 ]; then BSTEPS=3; CSTEPS=3; BATCH=16; else BSTEPS=300; CSTEPS=1000; BATCH=128; fi
# A CPU dry run exercises the same paths in fp32: bf16 and fp16 are emulated on most CPUs (an fp16 step of
# the seed DCGAN at batch 16 took 12.7 s against 0.32 s in fp32 on the AVX2 EPYC); the tests cover them.
LOW=bf16; HALF=fp16; [ "$DEV" = cpu ] && LOW=fp32 && HALF=fp32
bench() {  # bench NAME TIMEOUT ARGS...
  local name=$1 limit=$2; shift 2
  timeout "$limit" $PY -m scripts.benchmark --device "$DEV" --batch $BATCH --images 5000 "$@" > "$LOG/bench_$name.log" 2>&1
  record "bench_$name" "$LOG/bench_$name.log"
}
bench default 150 --steps $BSTEPS --ceiling
bench ${LOW}_cl_eager 90 --steps $BSTEPS --skip-reference --precision $LOW --channels-last on --cuda-graph off
bench ${LOW}_nchw_eager 90 --steps $BSTEPS --skip-reference --precision $LOW --channels-last off --cuda-graph off
bench ${HALF}_nchw_eager_scaled 90 --steps $BSTEPS --skip-reference --precision $HALF --channels-last off --cuda-graph off
bench ${LOW}_cl_graph 90 --steps $CSTEPS --skip-reference --precision $LOW --channels-last on --cuda-graph on
bench ${LOW}_nchw_graph 90 --steps $CSTEPS --skip-reference --precision $LOW --channels-last off --cuda-graph on
bench compile_reduce_overhead 180 --steps $CSTEPS --skip-reference --compile --compile-mode reduce-overhead \
  --channels-last off --cuda-graph off
[ "$SMOKE" = 1 ] || bench compile_max_autotune 240 --steps $CSTEPS --skip-reference --compile --compile-mode max-autotune \
  --channels-last off --cuda-graph off
timeout 120 $PY -m scripts.profile_step --device "$DEV" --batch $BATCH --out "$LOG/profile" > "$LOG/profile.log" 2>&1
record profile "$LOG/profile.log"
head -n 25 "$LOG/profile/ops.txt" 2>/dev/null
$PY -m scripts.speed_table "$RESULTS" | tee "$LOG/speed_table.md"
echo "benchmarks done at $(elapsed) s"

# 2. Side by side until the deadline.
FMNIST=${GANLAB_FMNIST:-data/fashion-mnist}
[ -e "$FMNIST/t10k-images-idx3-ubyte.gz" ] || FMNIST=/usr/share/datasets/fashion-mnist
TRAIN_S=$(( BUDGET_S - $(elapsed) - 60 ))  # leave a minute for scoring, export and packing
MARGIN_S=120  # scoring and export after the training deadline
[ "$SMOKE" = 1 ] && TRAIN_S=20 && MARGIN_S=600  # 2 CPU cores shared by four runs
MINUTES=$(python3 -c "print(max(0.5, $TRAIN_S / 60))")
pids=()
if [ "${GPU_CHECK_FMNIST:-1}" = 0 ]; then
  echo "{\"part\": \"fmnist\", \"error\": \"skipped (GPU_CHECK_FMNIST=0)\"}" >> "$RESULTS"
elif [ -e "$FMNIST/t10k-images-idx3-ubyte.gz" ]; then
  CK=5000; [ "$SMOKE" = 1 ] && CK=20
  run_fmnist() {  # NAME ARGS...
    local name=$1; shift
    OMP_NUM_THREADS=2 GANLAB_CACHE="$LOG/.cache-$name" timeout $(( TRAIN_S + MARGIN_S )) $PY -m scripts.cluster_run \
      --data-path "$FMNIST" --device "$DEV" --minutes "$MINUTES" --checkpoint-every $CK \
      --out "$LOG/runs/$name" --export "$OUT_DIR/$name.tar" "$@" > "$LOG/$name.log" 2>&1
  }
  # Session 3 ran 7 Fashion-MNIST seeds; now one of those beside three shapes runs with the polar input
  # (session 5's CPU recipe, which reached ACC 0.98 in 22 CPU minutes): the GPU time and spread.
  run_fmnist fmnist_b256r2_s1 --seed 1 --batch 256 --iic-repeats 2 & pids+=($!)
  for s in 0 1 2; do
    run_fmnist "shapes_polar32_s$s" --data-source shapes --channels 3 --image-size 32 --seed $s --batch 64 \
      --iic-repeats 2 --model input_transform=polar aug_rotate_deg=180 & pids+=($!)
  done
else
  echo "{\"part\": \"fmnist\", \"error\": \"no Fashion-MNIST files at $FMNIST\"}" >> "$RESULTS"
fi
echo "clustering runs: $MINUTES min each, started at $(elapsed) s"
# BlobGAN on scenes: the GAN for 60% of the budget, then the inversion encoder for 25%, then scores.
BLOB_GAN_MIN=$(python3 -c "print(round(max(0.2, $TRAIN_S * 0.6 / 60), 2))")
BLOB_ENC_MIN=$(python3 -c "print(round(max(0.1, $TRAIN_S * 0.25 / 60), 2))")
BSTEPS_BLOB=1000000; [ "$SMOKE" = 1 ] && BSTEPS_BLOB=4
( OMP_NUM_THREADS=2 GANLAB_CACHE="$LOG/.cache-blob" timeout $(( TRAIN_S + MARGIN_S )) $PY - "$LOG" "$DEV" "$BLOB_GAN_MIN" "$BSTEPS_BLOB" <<'PYEOF'
import json, sys, time
from pathlib import Path
from gan_core import BlobGANConfig, DataConfig, RunConfig, TrainConfig
from gan_core.training import train
out, minutes, steps = Path(sys.argv[1]) / "runs" / "scenes-blobgan", float(sys.argv[3]), int(sys.argv[4])
cfg = RunConfig(model=BlobGANConfig(recon_weight=30.0, encoder_latent_weight=0.1),
                data=DataConfig(source="scenes", num_images=20000),
                train=TrainConfig(steps=steps, batch_size=64, device=sys.argv[2], ema_decay=0.999, lr_d=8e-4, log_every=100,
                                  sample_every=10**6, checkpoint_every=2000, out_dir=str(out)))
deadline = time.time() + minutes * 60
print(json.dumps(train(cfg, should_stop=lambda: time.time() > deadline)))
PYEOF
  ) > "$LOG/blobgan_train.log" 2>&1 &
BLOB_PID=$!
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$LOG/cuda_tests.log" 2>&1
echo "{\"part\": \"cuda_tests\", \"result\": {\"rc\": $?, \"summary\": \"$(tail -n 1 "$LOG/cuda_tests.log" | tr -d '"')\"}}" >> "$RESULTS"
DSTEPS=3000; [ "$SMOKE" = 1 ] && DSTEPS=4
timeout 200 $PY - "$LOG" "$DEV" "$DSTEPS" > "$LOG/dcgan.log" 2>&1 <<'PYEOF'
import json, sys
from pathlib import Path
from gan_core import DataConfig, DCGANConfig, RunConfig, TrainConfig
from gan_core.inference.loading import export
from gan_core.training import train
from gan_core.viz import image_grid
out = Path(sys.argv[1]) / "runs" / "shapes-dcgan"
steps = int(sys.argv[3])
cfg = RunConfig(model=DCGANConfig(ngf=32, ndf=32), data=DataConfig(source="shapes", num_images=20000),
                train=TrainConfig(steps=steps, batch_size=64, device=sys.argv[2], ema_decay=0.999, real_label=0.9,
                                  instance_noise=0.1, instance_noise_steps=max(1, steps * 4 // 5), log_every=250,
                                  sample_every=1000, checkpoint_every=1000, out_dir=str(out)))
result = train(cfg, on_sample=lambda s, x: image_grid(x, 8).save(Path(sys.argv[1]) / f"dcgan_samples_{s:06d}.png"))
export(result["checkpoint"], Path(sys.argv[1]) / "shapes-dcgan-cuda")
print(json.dumps(result))
PYEOF
record dcgan_short "$LOG/dcgan.log"
wait "$BLOB_PID"
record blobgan_train "$LOG/blobgan_train.log"
ESTEPS=1000000; [ "$SMOKE" = 1 ] && ESTEPS=3
timeout $(( MARGIN_S + 60 )) $PY -m scripts.train_encoder --checkpoint "$LOG/runs/scenes-blobgan" --out "$LOG/scenes-blobgan" \
  --from-checkpoint-encoder --latent-weight 0.1 --device "$DEV" --batch 64 --steps $ESTEPS --minutes "$BLOB_ENC_MIN" > "$LOG/blobgan_encoder.log" 2>&1
record blobgan_encoder "$LOG/blobgan_encoder.log"
NEVAL=500; [ "$SMOKE" = 1 ] && NEVAL=10
timeout 120 $PY -m scripts.evaluate_blobs --checkpoint "$LOG/scenes-blobgan" --device "$DEV" --num-images $NEVAL \
  > "$LOG/blobgan_eval.log" 2>&1
record blobgan_eval "$LOG/blobgan_eval.log"
timeout 60 $PY -c "import sys; from gan_core.inference.loading import export; export(sys.argv[1], sys.argv[2])" \
  "$LOG/scenes-blobgan" "$LOG/scenes-blobgan-fp16" && tar -cf "$OUT_DIR/scenes_blobgan.tar" -C "$LOG" scenes-blobgan-fp16
for p in "${pids[@]}"; do wait "$p"; done
for f in "$LOG"/fmnist_*.log "$LOG"/shapes_*.log; do [ -e "$f" ] && record "$(basename "$f" .log)" "$f"; done
echo "all parts done at $(elapsed) s"

# 3. Pack: logs and small files in one archive (the run folders' full checkpoints stay behind).
tar -czf "$OUT_DIR/logs.tar.gz" --exclude='./runs' --exclude='./.cache*' --exclude='./scenes-blobgan*' -C "$LOG" . 2>/dev/null
rm -rf "$LOG"
cat "$RESULTS"
echo "gpu_check done at $(elapsed) s: $(ls "$OUT_DIR" | tr '\n' ' ')"
