#!/usr/bin/env bash
# GPU campaign A: environment, test suite, evaluation / training benchmarks, the 8 notebooks.
#
# On the GPU machine (repo root, `.whl` carried):   bash benchmarks/gpu/campaign_a.sh
# Dry run here (CPU, tiny scale, same plumbing):
#   OUT=$(mktemp -d) DRY=1 PY=/work/main/.venv/bin/python nice -n 10 bash benchmarks/gpu/campaign_a.sh
#
# Everything is logged to $OUT/campaign_a.log; the files produced are packed into $OUT/campaign_a.tar.gz
# (no checkpoints, no codes.npz). Every step runs under `timeout`; a failing step does not stop the later
# ones. The whole script keeps inside BUDGET seconds (default 510): the per-step limits below are capped
# so that the notebooks (step e) always keep NB_RESERVE seconds and packing PACK_RESERVE seconds.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
ROOT=$PWD
PY=${PY:-python3}
DRY=${DRY:-0}
OUT=${OUT:-$ROOT/results/_tmp_out_a}
if [ "$DRY" = 1 ]; then BUDGET=${BUDGET:-900}; else BUDGET=${BUDGET:-510}; fi
NB_RESERVE=${NB_RESERVE:-250}
PACK_RESERVE=${PACK_RESERVE:-15}
WHL_SITE=${WHL_SITE:-/tmp/site}
mkdir -p "$OUT"
LOG=$OUT/campaign_a.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
T0=$(date +%s)

if [ "$DRY" = 1 ]; then
  RES=results/_tmp_dry_a          # git-ignored: a dry run leaves the tracked tree alone
  NBRES=$RES/gpu_notebooks
  EVAL_OUT=$RES/eval_gpu
  TRAIN_OUT=$RES/train_gpu.md
else
  RES=results
  NBRES=results/gpu_notebooks
  EVAL_OUT=results/benchmarks/eval_gpu
  TRAIN_OUT=results/benchmarks/train_gpu.md
fi
STEPS_CSV=$NBRES/steps.csv
mkdir -p "$NBRES"
echo "step,rc,seconds,limit" >"$STEPS_CSV"

elapsed() { echo $(( $(date +%s) - T0 )); }
# cap WANT RESERVE: WANT, or less so that RESERVE seconds of the budget stay for what follows (>= 10)
cap() { local left=$(( BUDGET - $(elapsed) - $2 )); local t=$1; [ "$left" -lt "$t" ] && t=$left; [ "$t" -lt 10 ] && t=10; echo "$t"; }
# step NAME LIMIT CMD...: run CMD under timeout, log and record rc and wall time
step() {
  local name=$1 lim=$2; shift 2
  echo; echo "=================== [$(elapsed)s] step $name (limit ${lim}s): $*"
  local s; s=$(date +%s.%N)
  if [ -n "${STEP_OUT:-}" ]; then timeout -k 10 "$lim" "$@" >"$STEP_OUT" 2>&1; else timeout -k 10 "$lim" "$@"; fi
  local rc=$?
  local d; d=$(python_secs "$s")
  echo "=================== [$(elapsed)s] step $name: rc=$rc in ${d}s"
  echo "$name,$rc,$d,$lim" >>"$STEPS_CSV"
  return $rc
}
python_secs() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}'; }

echo "campaign A: DRY=$DRY PY=$PY OUT=$OUT BUDGET=${BUDGET}s start $(date -u +%FT%TZ) in $ROOT"
echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed files"

# ------------------------------------------------------------------ a. environment + wheels
echo; echo "=================== a. environment"
timeout 20 nvidia-smi || echo "(nvidia-smi unavailable)"
nproc; free -g
if [ "$DRY" = 1 ]; then
  # the cp312 wheels cannot be imported by this interpreter: only check that they install together
  if ls .whl/*.whl >/dev/null 2>&1; then
    chk=$(mktemp -d)
    step wheels_check 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$chk" --python-version 3.12 --implementation cp --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
      --platform manylinux1_x86_64 .whl/*.whl && echo "wheels install together: $(ls "$chk" | grep -c dist-info) dists"
    rm -rf "$chk"
  fi
  export PYTHONPATH=$ROOT
else
  if ls .whl/*.whl >/dev/null 2>&1; then
    step wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WHL_SITE" .whl/*.whl
  else
    echo "!! no .whl folder: papermill/faiss will be missing"
  fi
  export PYTHONPATH=$WHL_SITE:$ROOT
fi
export HF_HUB_OFFLINE=1
# a kernel spec named python3 that runs this very interpreter (the kernel inherits PYTHONPATH);
# JUPYTER_PATH comes first in jupyter_client's search, so no other python3 spec can shadow it
KERN=$(mktemp -d /tmp/kern.XXXX)
export IPYTHONDIR=$KERN/ipython JUPYTER_RUNTIME_DIR=$KERN/runtime JUPYTER_DATA_DIR=$KERN/data
timeout 60 "$PY" -m ipykernel install --prefix "$KERN" --name python3 --display-name "Python 3" \
  && export JUPYTER_PATH=$KERN/share/jupyter
timeout 120 "$PY" - <<'EOF'
import importlib, os, platform, sys
print("python", sys.version.split()[0], sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for m in ["torchvision", "timm", "numpy", "numba", "pandas", "sklearn", "papermill", "nbformat", "nbclient",
          "ipykernel", "jupyter_client", "nbval", "faiss", "zmq", "IPython",
          "psutil", "pygments", "attrs", "dateutil", "typing_extensions", "tornado", "traitlets"]:
    try:
        mod = importlib.import_module(m)
        print(f"  {m:15s} {getattr(mod, '__version__', '?'):12s} {os.path.dirname(mod.__file__ or '')}")
    except Exception as e:
        print(f"  {m:15s} IMPORT FAILED: {type(e).__name__}: {e}")
try:
    from jupyter_client.kernelspec import KernelSpecManager
    k = KernelSpecManager()
    print("kernel specs:", k.find_kernel_specs())
    print("python3 kernel argv:", k.get_kernel_spec("python3").argv)
except Exception as e:
    print("kernel spec lookup failed:", e)
EOF

# ------------------------------------------------------------------ b. tests
if [ "$DRY" = 1 ]; then
  TESTS=(tests/test_metrics.py tests/test_cauchy.py)
else
  TESTS=(tests/)
fi
TOUT=(--timeout 600)
"$PY" -c "import pytest_timeout" 2>/dev/null || { TOUT=(); echo "(pytest-timeout missing: no --timeout)"; }
STEP_OUT=$NBRES/pytest.txt step pytest "$(cap 150 $((NB_RESERVE + PACK_RESERVE + 90)))" \
  "$PY" -m pytest -q -x -p no:cacheprovider "${TESTS[@]}" "${TOUT[@]}" -k "not notebook"
echo "--- pytest tail (full output in $NBRES/pytest.txt)"; tail -n 40 "$NBRES/pytest.txt"

# ------------------------------------------------------------------ c. evaluation benchmark
if [ "$DRY" = 1 ]; then
  EVAL_ARGS=(--sizes cifar10 --bits 16 --naive-queries 5 --repeats 1 --out "$EVAL_OUT")
else
  EVAL_ARGS=(--naive-queries 50 --repeats 3 --out "$EVAL_OUT")
fi
step bench_eval "$(cap 180 $((NB_RESERVE + PACK_RESERVE + 60)))" "$PY" benchmarks/bench_eval.py "${EVAL_ARGS[@]}"

# ------------------------------------------------------------------ d. training benchmark
if [ "$DRY" = 1 ]; then
  TRAIN_ARGS=(--device cpu --only small --small-batch 8 --steps 1 --out "$TRAIN_OUT")
else
  # defaults on CUDA: ViT-B/16 @224 batch 256 + vit32_small batch 256; 15 timed steps keeps it < 90 s
  TRAIN_ARGS=(--device cuda --compile --steps 15 --out "$TRAIN_OUT")
fi
step bench_train "$(cap 120 $((NB_RESERVE + PACK_RESERVE)))" "$PY" benchmarks/bench_train.py "${TRAIN_ARGS[@]}"

# ------------------------------------------------------------------ e. notebooks (2 at a time, 06 last)
echo; echo "=================== [$(elapsed)s] e. notebooks"
NB_END=$(( BUDGET - PACK_RESERVE ))      # all notebooks end by then
NB06=${NB06:-50}                         # seconds kept for 06_map_tables, which reads the others' runs
NB_PAR=${NB_PAR:-2}
echo "notebook,rc,seconds,limit,start_s" >"$NBRES/summary.csv"
run_nb() {
  local stem=$1 end=$2
  local lim=$(( end - $(elapsed) )); [ "$lim" -gt 240 ] && lim=240
  if [ "$lim" -lt 15 ]; then echo "$stem,skipped,0,$lim,$(elapsed)" >>"$NBRES/summary.csv"; echo "!! $stem skipped: no time left"; return; fi
  local p=(-p run_dir "$NBRES/$stem")
  [ "$stem" = 06_map_tables ] && p=(-p out_dir "$NBRES/$stem" -p results_root "$NBRES")  # 06 writes to out_dir
  [ "$stem" = 07_retrieval ] && [ -n "${NB07_TIMING:-}" ] && p+=(-y "timing_sizes: $NB07_TIMING")
  local f=()
  [ "$DRY" = 1 ] && f=(-f "configs/smoke/$stem.yaml")
  local st; st=$(elapsed); local s; s=$(date +%s.%N)
  echo "--- [$(elapsed)s] start $stem (limit ${lim}s)"
  timeout -k 10 "$lim" "$PY" -m papermill "notebooks/$stem.ipynb" "$NBRES/$stem.ipynb" -k python3 --cwd "$ROOT" \
    --no-progress-bar --execution-timeout "$lim" "${f[@]}" "${p[@]}" >"$NBRES/$stem.papermill.log" 2>&1
  local rc=$?
  local d; d=$(python_secs "$s")
  echo "$stem,$rc,$d,$lim,$st" >>"$NBRES/summary.csv"
  echo "--- [$(elapsed)s] done $stem rc=$rc in ${d}s"
  [ "$rc" = 0 ] || tail -n 25 "$NBRES/$stem.papermill.log"
}
# 07 first (its faiss timing on 10^4..10^6 codes is CPU-bound), then the heaviest GPU ones;
# plain `wait` would also wait for the log's tee (a process substitution), so wait on the pids
pids=()
for stem in 07_retrieval 03_aevit_hsc 05_loss_zoo 02_transhash 04_single_loss 00_quickstart 01_data_prep; do
  while [ "$(jobs -rp | wc -l)" -ge "$NB_PAR" ]; do sleep 1; done
  run_nb "$stem" $(( NB_END - NB06 )) &
  pids+=($!)
  sleep 1
done
wait "${pids[@]}"
run_nb 06_map_tables "$NB_END"
echo "--- notebooks summary"; cat "$NBRES/summary.csv"
echo "--- steps"; cat "$STEPS_CSV"

# ------------------------------------------------------------------ pack
echo; echo "=================== [$(elapsed)s] pack"
if [ "$DRY" = 1 ]; then PACK=("$RES"); else PACK=("$NBRES" results/benchmarks); fi
EXCL=(--exclude='*.pt' --exclude='*.ckpt' --exclude='codes.npz' --exclude='*.pth' --exclude='__pycache__')
TAR=$OUT/campaign_a.tar.gz
tar czf "$TAR" "${EXCL[@]}" "${PACK[@]}" 2>&1 | tail -n 5
sz=$(stat -c %s "$TAR" 2>/dev/null || echo 0)
if [ "$sz" -gt 15728640 ]; then
  echo "!! tarball ${sz} bytes > 15 MiB: packing again without files over 1 MiB"
  find "${PACK[@]}" -type f -size +1M >"$KERN/big.txt"; cat "$KERN/big.txt"
  tar czf "$TAR" "${EXCL[@]}" -X "$KERN/big.txt" "${PACK[@]}"
  sz=$(stat -c %s "$TAR")
fi
echo "tarball $TAR: $sz bytes, $(tar tzf "$TAR" | wc -l) entries"
echo "campaign A done in $(elapsed)s"
