#!/usr/bin/env bash
# GPU campaign B: every method on the real CIFAR-10 at the shared from-scratch budget
# (configs/cifar10_scratch.yaml: 30 epochs, vit32_tiny, batch 64) at 16, 32 and 64 bits, on CUDA,
# four training processes at a time on the one GPU; then bench_data.py on the real images if time is left.
#
# On the GPU machine (repo root, the ten CIFAR-10 zips carried in gpu_data/cifar10):
#   bash benchmarks/gpu/campaign_b.sh
# Dry run here (CPU, 2 runs of 1 epoch with the tiny test ViT, same plumbing):
#   OUT=$(mktemp -d) DRY=1 PY=/work/main/.venv/bin/python nice -n 10 bash benchmarks/gpu/campaign_b.sh
#
# Run directories: results/cifar10_gpu_e30/<method>_<bits>/ (dry: results/_tmp_dry_b/...); per-run logs in
# <results>/_logs/, the queue's record (rc, seconds) in <results>/queue.csv. Log: $OUT/campaign_b.log;
# everything but codes and checkpoints packed into $OUT/campaign_b.tar.gz. The script ends within BUDGET
# seconds (default 540): the queue is ordered 32, 64, 16 bits and no run is started after LAUNCH_END
# seconds (default 480); runs still going at BUDGET - PACK_RESERVE are stopped.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
ROOT=$PWD
PY=${PY:-python3}
DRY=${DRY:-0}
OUT=${OUT:-$ROOT/results/_tmp_out_b}
DATA=${DATA:-gpu_data/cifar10}
PAR=${PAR:-4}
PACK_RESERVE=${PACK_RESERVE:-15}
if [ "$DRY" = 1 ]; then
  BUDGET=${BUDGET:-900}; LAUNCH_END=${LAUNCH_END:-600}
  RES=results/_tmp_dry_b/cifar10_gpu_e30; BENCH_OUT=results/_tmp_dry_b/data_gpu
  DEVICE=cpu; EXTRA=(--epochs 1 --backbone vit32_test); PAR=${PAR_DRY:-2}
  QUEUE=("csq 32" "aevit_hsc 16")
else
  BUDGET=${BUDGET:-540}; LAUNCH_END=${LAUNCH_END:-480}
  RES=results/cifar10_gpu_e30; BENCH_OUT=results/benchmarks/data_gpu
  DEVICE=cuda; EXTRA=()
  METHODS=(csq dpsh hashnet greedyhash dpn dch transhash slvit aevit_hsc vit_hsc)
  QUEUE=()
  for b in 32 64 16; do for m in "${METHODS[@]}"; do QUEUE+=("$m $b"); done; done
fi
mkdir -p "$OUT" "$RES/_logs"
LOG=$OUT/campaign_b.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
export PYTHONPATH=${WHL_SITE:-/tmp/site}:$ROOT
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
secs_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}'; }

echo "campaign B: DRY=$DRY PY=$PY OUT=$OUT DATA=$DATA PAR=$PAR BUDGET=${BUDGET}s LAUNCH_END=${LAUNCH_END}s" \
     "start $(date -u +%FT%TZ) in $ROOT, git $(git rev-parse --short HEAD 2>/dev/null)"
echo "${#QUEUE[@]} runs queued: ${QUEUE[*]}"

# ------------------------------------------------------------------ environment
timeout 20 nvidia-smi || echo "(nvidia-smi unavailable)"
nproc; free -g; ls -la "$DATA"
if [ "$DRY" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then   # not needed for training; harmless when carried
  timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "${WHL_SITE:-/tmp/site}" .whl/*.whl
fi
timeout 60 "$PY" -c "
import sys, torch, timm, numpy
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.is_available() and torch.cuda.get_device_name(0), 'timm', timm.__version__, 'numpy', numpy.__version__)"

# ------------------------------------------------------------------ decode the pool once (cache in data/cache)
echo; echo "=================== [$(elapsed)s] decode CIFAR-10 once"
s=$(date +%s.%N)
timeout -k 10 180 "$PY" -c "
import time; t = time.perf_counter()
from hashlib_vit.data import get_protocol
from hashlib_vit.data.sources import cache_dir
d = get_protocol('cifar10').load('$DATA', seed=0)
print('cifar10 protocol loaded in %.1fs; cache %s' % (time.perf_counter() - t, cache_dir()))
s = getattr(d, 'sizes', None); print('split sizes:', s() if callable(s) else s)
"
echo "decode rc=$? in $(secs_since "$s")s"

# ------------------------------------------------------------------ the queue
method_args() {
  case $1 in
    csq|dpsh|hashnet|greedyhash|dpn|dch) echo "--loss $1 --method $1" ;;
    transhash) echo '--head mgvt --loss transhash --model-params {"groups":2} --method transhash' ;;
    slvit) echo "--head hcl --loss orthohash --method slvit" ;;
    aevit_hsc) echo '--loss hsc --method aevit_hsc --model-params {"aem":"all"}' ;;
    vit_hsc) echo '--loss hsc --method vit_hsc --model-params {"aem":"off"}' ;;
    *) return 1 ;;
  esac
}
train_one() {   # train_one METHOD BITS (run by xargs in a fresh bash)
  local m=$1 b=$2 name=$1_$2 now; now=$(elapsed)
  if [ "$now" -ge "$LAUNCH_END" ]; then
    echo "$m,$b,skipped,0,$now" >>"$RES/queue.csv"; echo "-- [$now s] skip $name (past launch deadline)"; return 0
  fi
  local lim=$(( BUDGET - PACK_RESERVE - now ))
  local args; args=$(method_args "$m") || { echo "unknown method $m"; return 0; }
  echo "-- [$now s] start $name (limit ${lim}s)"
  local s; s=$(date +%s.%N)
  # shellcheck disable=SC2086  # args holds no spaces inside one word
  OMP_NUM_THREADS=${RUN_THREADS:-3} timeout -k 10 "$lim" "$PY" -m hashlib_vit.cli train \
    --config configs/cifar10_scratch.yaml --data-root "$DATA" --device "$DEVICE" --bits "$b" \
    --run-dir "$RES/$name" $args "${EXTRA[@]}" >"$RES/_logs/$name.log" 2>&1
  local rc=$? d; d=$(secs_since "$s")
  echo "$m,$b,$rc,$d,$now" >>"$RES/queue.csv"
  local map; map=$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print({k: v for k, v in m.items() if 'map' in k.lower()})" "$RES/$name/metrics.json" 2>/dev/null)
  echo "-- [$(elapsed)s] done $name rc=$rc in ${d}s ${map}"
  [ "$rc" = 0 ] || tail -n 15 "$RES/_logs/$name.log"
}
export -f train_one method_args elapsed secs_since
export T0 LAUNCH_END BUDGET PACK_RESERVE RES PY DATA DEVICE
EXTRA_STR=${EXTRA[*]:-}
export EXTRA_STR
echo "method,bits,rc,seconds,start_s" >"$RES/queue.csv"
echo; echo "=================== [$(elapsed)s] queue: ${#QUEUE[@]} runs, $PAR at a time"
printf '%s\n' "${QUEUE[@]}" | xargs -P "$PAR" -L 1 bash -c 'EXTRA=($EXTRA_STR); train_one "$@"' _
echo "=================== [$(elapsed)s] queue done"
cat "$RES/queue.csv"
echo "ok runs: $(awk -F, '$3 == 0' "$RES/queue.csv" | wc -l) of ${#QUEUE[@]}"

# ------------------------------------------------------------------ table of what finished (cheap, CPU)
left=$(( BUDGET - PACK_RESERVE - $(elapsed) ))
if [ "$left" -gt 45 ]; then
  timeout -k 5 40 "$PY" -m hashlib_vit.cli tables "$RES" --out "$RES/tables" >"$RES/_logs/tables.log" 2>&1
  echo "tables rc=$?"; ls "$RES/tables" 2>/dev/null; cat "$RES/tables/"*.md 2>/dev/null | head -n 40
fi

# ------------------------------------------------------------------ bench_data on the real images, if it fits
left=$(( BUDGET - PACK_RESERVE - $(elapsed) ))
if [ "$left" -ge 60 ]; then
  if [ "$DRY" = 1 ]; then
    BD=(--n 500 --n224 64 --sizes 32 224 --repeat 1 --workers 0 --device cpu)
  else
    BD=(--device cuda --workers 8)
  fi
  echo; echo "=================== [$(elapsed)s] bench_data (limit $((left - 5))s)"
  s=$(date +%s.%N)
  timeout -k 5 $((left - 5)) "$PY" benchmarks/bench_data.py --shared "$(dirname "$DATA")" "${BD[@]}" --out "$BENCH_OUT"
  echo "bench_data rc=$? in $(secs_since "$s")s"
else
  echo "!! bench_data skipped: only ${left}s left"
fi

# ------------------------------------------------------------------ pack
echo; echo "=================== [$(elapsed)s] pack"
TAR=$OUT/campaign_b.tar.gz
PACK=("$RES"); [ -d "$BENCH_OUT" ] && PACK+=("$BENCH_OUT")
tar czf "$TAR" --exclude='*.pt' --exclude='*.ckpt' --exclude='*.pth' --exclude='codes.npz' "${PACK[@]}"
echo "tarball $TAR: $(stat -c %s "$TAR") bytes, $(tar tzf "$TAR" | wc -l) entries"
echo "campaign B done in $(elapsed)s"
