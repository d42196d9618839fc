#!/usr/bin/env bash
# GPU checks in one go, about 9 minutes on one H100/H200:  bash scripts/gpu_check.sh OUT_DIR
# (from any folder: it runs the scripts as modules, `python -m scripts.NAME`, from the repository root)
# Parts (GPU_CHECK_PARTS, comma-separated; default speed,race,tests):
#  speed    GPU to itself: the speed table at batch 128 (the tutorial; gan_core's default, chosen by timing,
#           with --ceiling; then bf16 / fp16, NCHW / channels_last, eager / one CUDA graph, torch.compile by
#           hand while time allows, most telling first) and a profile of the default step (issue 14).
#  race     the bundled shapes-dcgan trained on (train.init_from) in recipes side by side until the deadline
#           (scripts.recipe_race: learning rate, batch, D's width, an encoder, top-k), every checkpoint scored by scripts.evaluate_samples;
#           each recipe's best checkpoint comes back in fp16 (race_NAME.tar) (issue 16).
#  tests    the CUDA tests (tests/test_cuda.py), beside the race.
#  clusters clustering runs (scripts.cluster_run: Fashion-MNIST seed 1, three seeds of built-in shapes)
#  blobgan  a BlobGAN on scenes, its inversion encoder and scripts.evaluate_blobs
# OUT_DIR gets at most 8 files (the device tool's limit): results.jsonl (one JSON object per part),
# logs.tar.gz (logs, the speed table, the profile's ops.txt and trace.json, sample grids), race_*.tar
# (and with the optional parts fmnist_*.tar, shapes_*.tar, scenes_blobgan.tar: name fewer race recipes).
# Needs only torch, torchvision, numpy, pillow, safetensors, scipy, scikit-learn, tqdm and pytest (the
# lent GPU image has them); no Hydra. Fashion-MNIST: data/fashion-mnist (git-ignored; send it with the
# device tool's `carry`) or /usr/share/datasets/fashion-mnist.
# Knobs: GPU_CHECK_DEVICE=cpu GPU_CHECK_SMOKE=1 runs the same plumbing on a CPU (a few minutes);
# GPU_CHECK_BUDGET_S sets the deadline (default 540); GPU_CHECK_SPEED_S the speed part's (default 170).
set -uo pipefail
OUT_DIR=${1:-${OUT:-gpu_out}}
PY=${PYTHON:-python3}
DEV=${GPU_CHECK_DEVICE:-cuda}
SMOKE=${GPU_CHECK_SMOKE:-0}
BUDGET_S=${GPU_CHECK_BUDGET_S:-540}  # the whole script ends by about this many seconds
SPEED_S=${GPU_CHECK_SPEED_S:-170}  # no new speed row starts after this many seconds
PARTS=",${GPU_CHECK_PARTS:-speed,race,tests},"
has() { case "$PARTS" in *",$1,"*) return 0 ;; esac; return 1; }
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

# The race's images, rendered on the CPU while the speed part has the GPU (what each recipe and each
# scoring would otherwise render for itself): the training set, the scoring's reference and held-out sets.
if has race; then
  RACE_IMAGES=20000; RACE_N=2000; [ "$SMOKE" = 1 ] && RACE_IMAGES=512 && RACE_N=200
  GANLAB_CACHE="$LOG/.cache-race" OMP_NUM_THREADS=1 timeout 200 $PY -c "
import sys
from gan_core.config import DataConfig
from gan_core.data import load_dataset
from scripts.evaluate_samples import held_out
data = DataConfig(source='shapes', num_images=int(sys.argv[1]))
load_dataset(data); load_dataset(DataConfig(source='shapes', num_images=int(sys.argv[2]))); held_out(data, int(sys.argv[2]))
" $RACE_IMAGES $RACE_N > "$LOG/race_render.log" 2>&1 &
fi

# 1. The speed table, alone on the GPU (issue 14): the tutorial vs gan_core's default (everything
#    `auto`: precision, memory format and CUDA graph chosen by timing them, and --ceiling), a profile of
#    the default step, then each path by hand, most telling first, while the speed part's time lasts.
#    scripts.speed_table prints them as one table.
if [ "$SMOKE" = 1 ]; then BSTEPS=3; CSTEPS=3; BATCH=16; else BSTEPS=300; CSTEPS=1000; BATCH=128; fi
# A CPU dry run exercises the same paths in fp32: bf16 and fp16 are emulated on most CPUs (an fp16 step of
# the seed DCGAN at batch 16 took 12.7 s against 0.32 s in fp32 on the AVX2 EPYC); the tests cover them.
LOW=bf16; HALF=fp16; [ "$DEV" = cpu ] && LOW=fp32 && HALF=fp32
bench() {  # bench NAME TIMEOUT ARGS...  (skipped once the speed part's time is spent)
  local name=$1 limit=$2; shift 2
  if [ "$(elapsed)" -ge "$SPEED_S" ]; then
    echo "{\"part\": \"bench_$name\", \"error\": \"skipped: the speed part's $SPEED_S s were spent\"}" >> "$RESULTS"
    return
  fi
  timeout "$limit" $PY -m scripts.benchmark --device "$DEV" --batch $BATCH --images 5000 "$@" > "$LOG/bench_$name.log" 2>&1
  record "bench_$name" "$LOG/bench_$name.log"
}
if has speed; then
  bench default 150 --steps $BSTEPS --ceiling
  timeout 60 $PY -m scripts.profile_step --device "$DEV" --batch $BATCH --out "$LOG/profile" > "$LOG/profile.log" 2>&1
  record profile "$LOG/profile.log"
  head -n 25 "$LOG/profile/ops.txt" 2>/dev/null
  bench ${LOW}_nchw_eager 60 --steps $BSTEPS --skip-reference --precision $LOW --channels-last off --cuda-graph off
  bench ${LOW}_cl_graph 60 --steps $CSTEPS --skip-reference --precision $LOW --channels-last on --cuda-graph on
  bench ${LOW}_nchw_graph 60 --steps $CSTEPS --skip-reference --precision $LOW --channels-last off --cuda-graph on
  bench ${LOW}_cl_eager 60 --steps $BSTEPS --skip-reference --precision $LOW --channels-last on --cuda-graph off
  bench ${HALF}_nchw_eager_scaled 60 --steps $BSTEPS --skip-reference --precision $HALF --channels-last off --cuda-graph off
  bench compile_reduce_overhead 120 --steps $CSTEPS --skip-reference --compile --compile-mode reduce-overhead \
    --channels-last off --cuda-graph off
  $PY -m scripts.speed_table "$RESULTS" | tee "$LOG/speed_table.md"
  echo "speed part done at $(elapsed) s"
fi

# 2. Side by side until the deadline: the recipe race, the CUDA tests and the optional parts.
FMNIST=${GANLAB_FMNIST:-data/fashion-mnist}
[ -e "$FMNIST/t10k-images-idx3-ubyte.gz" ] || FMNIST=/usr/share/datasets/fashion-mnist
SCORE_S=100  # the race's scoring after its training deadline
PACK_S=30
TRAIN_S=$(( BUDGET_S - $(elapsed) - SCORE_S - PACK_S ))
MARGIN_S=120  # scoring and export after the training deadline (the optional parts)
[ "$SMOKE" = 1 ] && TRAIN_S=20 && MARGIN_S=600 && SCORE_S=120  # 2 CPU cores shared by every run
[ "$TRAIN_S" -lt 30 ] && TRAIN_S=30
MINUTES=$(python3 -c "print(round($TRAIN_S / 60, 2))")
echo "training parts: $MINUTES min each, from $(elapsed) s"

# The race (issue 16): the bundled shapes-dcgan (step 138,742, ngf 64, ndf 32, R1 gamma 1 every 16th step,
# EMA 0.999) trained on from its weights (`train.init_from`, fresh Adam) at the CPU's batch and rate, at
# twice the rate, at batch 256, with D widened to the seed's ndf 64 (scripts.widen_checkpoint --part
# discriminator: same logits at the start), with an encoder beside the GAN (model.recon_weight: flat
# over 2,000 CPU steps, BENCHMARKS.md), and with top-k training (model.g_topk=0.5: flat over 2,000 CPU
# steps): how far a GPU's minutes take the model the CPU trained for 8 h.
# (Session 17 raced recipes from scratch: BENCHMARKS.md.) The smoke run does the same at tiny batches.
RACE_PID=
if has race; then
  wait  # the race's images (the only job still in the background here)
  timeout 120 $PY -m scripts.widen_checkpoint --checkpoint checkpoints/shapes-dcgan --out "$LOG/wide_d" \
    --part discriminator > "$LOG/widen_d.log" 2>&1
  record widen_d "$LOG/widen_d.log"
  if [ "$SMOKE" = 1 ]; then
    RACE_BASE="train.checkpoint_every=4 train.sample_every=8 train.log_every=2"; B_SMALL=4; B_BIG=8
  else
    RACE_BASE="train.checkpoint_every=2000 train.sample_every=2000 train.log_every=100"; B_SMALL=64; B_BIG=256
  fi
  ( GANLAB_CACHE="$LOG/.cache-race" timeout $(( TRAIN_S + SCORE_S + 30 )) $PY -m scripts.recipe_race --out "$LOG/race" \
      --minutes "$MINUTES" --device "$DEV" --n $RACE_N --real $RACE_N --score-every 2 \
      --score-minutes $(python3 -c "print(round($SCORE_S / 60 - 0.2, 2))") \
      --base model.kind=dcgan data.source=shapes model.ngf=64 model.ndf=32 model.r1_gamma=1 model.r1_every=16 \
        train.ema_decay=0.999 train.init_from=checkpoints/shapes-dcgan \
        data.num_images=$RACE_IMAGES train.steps=10000000 train.keep_checkpoints=1000 $RACE_BASE \
      --recipe b64_lr1e-4 train.batch_size=$B_SMALL train.lr=1e-4 \
      --recipe b64_lr2e-4 train.batch_size=$B_SMALL train.lr=2e-4 \
      --recipe b256_lr2e-4 train.batch_size=$B_BIG train.lr=2e-4 \
      --recipe d64_b64_lr1e-4 train.batch_size=$B_SMALL train.lr=1e-4 model.ndf=64 train.init_from="$LOG/wide_d" \
      --recipe enc_b64_lr1e-4 train.batch_size=$B_SMALL train.lr=1e-4 model.recon_weight=30 model.encoder_lr=5e-4 \
      --recipe topk_b64_lr1e-4 train.batch_size=$B_SMALL train.lr=1e-4 model.g_topk=0.5 \
    ) > "$LOG/race.log" 2>&1 &
  RACE_PID=$!
fi

if has clusters; then
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
fi
BLOB_PID=
if has blobgan; then
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
fi
if has tests; then
  timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$LOG/cuda_tests.log" 2>&1
  echo "{\"part\": \"cuda_tests\", \"result\": {\"rc\": $?, \"summary\": \"$(tail -n 1 "$LOG/cuda_tests.log" | tr -d '"')\"}}" >> "$RESULTS"
fi
if [ -n "$BLOB_PID" ]; then
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
fi
if has clusters; then
  for p in ${pids[@]+"${pids[@]}"}; do wait "$p"; done
  for f in "$LOG"/fmnist_*.log "$LOG"/shapes_*.log; do [ -e "$f" ] && record "$(basename "$f" .log)" "$f"; done
fi
if [ -n "$RACE_PID" ]; then
  wait "$RACE_PID"
  record race "$LOG/race.log"
  # each recipe's best checkpoint (lowest FID) in fp16, with its last sample grid, one tar per recipe
  timeout $PACK_S $PY - "$LOG/race" "$OUT_DIR" <<'PYEOF'
import json, shutil, sys, tarfile
from pathlib import Path
from gan_core.inference.loading import export
race, out = Path(sys.argv[1]), Path(sys.argv[2])
lines = [l for l in (race.parent / "race.log").read_text().splitlines() if l.startswith("{")]
result = json.loads(lines[-1]) if lines else {"recipes": {}}
for name, r in result["recipes"].items():
    if not r.get("best_checkpoint"):
        continue
    dst = race / "pack" / f"{name}_{r['best_checkpoint']}"
    export(race / name / "checkpoints" / r["best_checkpoint"], dst)
    if sum(f.stat().st_size for f in dst.iterdir()) > 15 * 2**20:  # the tool's 16 MiB a file
        (dst / "generator.safetensors").unlink()  # the EMA generator is what is sampled and scored
    grids = sorted((race / name / "samples").glob("*.png"))
    best = race / name / "samples" / f"{r['best_checkpoint']}.png"
    for grid in {*grids[-1:], *([best] if best.exists() else [])}:  # the last grid and the best step's
        shutil.copy(grid, dst / f"samples_{grid.name}")
    with tarfile.open(out / f"race_{name}.tar", "w") as tar:
        tar.add(dst, arcname=dst.name)
PYEOF
fi
echo "all parts done at $(elapsed) s"

# 3. Pack: logs and small files in one archive (the run folders' full checkpoints stay behind).
tar -czf "$OUT_DIR/logs.tar.gz" --exclude='./runs' --exclude='./.cache*' --exclude='./scenes-blobgan*' \
  --exclude='./race/*/checkpoints' --exclude='./race/*/samples' --exclude='./race/pack' -C "$LOG" . 2>/dev/null
rm -rf "$LOG"
cat "$RESULTS"
echo "gpu_check done at $(elapsed) s: $(ls "$OUT_DIR" | tr '\n' ' ')"
