#!/usr/bin/env bash
# GPU campaign C: the GPU cost of each paper reproduction (benchmarks/bench_recipes.py). The papers'
# architectures at full size with stand-in (random) weights, through our real model / loss / training
# loop: TransHash MGVT ViT-L/32 224 px batch 64, AE-ViT (ViT-B/16 + AEM + HSC), SL-ViT (ViT-B/16 + hcl +
# orthohash), ViT-B/16 + cls_linear (loss zoo), ResNet-50 / AlexNet (backbone study), then the extras
# (two-view HSC, ViT-B/32, one torch.compile run). Then the report: per-recipe img/s and peak memory, and
# the GPU-hours of each paper table.
#
# On the GPU machine (repo root, nothing carried; needs only python3 with torch, timm, numpy):
#   bash benchmarks/gpu/campaign_c.sh
# Dry run here (CPU, vit_tiny_patch16_224 at 64 px, batch 4, 2 timed steps, same plumbing, < 3 min):
#   OUT=$(mktemp -d) DRY=1 PY=/work/main/.venv/bin/python nice -n 10 bash benchmarks/gpu/campaign_c.sh
#
# Everything goes to $OUT: campaign_c.log, env.txt, steps.csv, recipes_rows.jsonl (one JSON line per
# recipe, appended as soon as it is measured), and the report of those rows: recipes_gpu.md,
# recipes_gpu.json, throughput.csv (the repository's rows with the measured ones merged in). Nothing is
# written into the working tree. Back on the development machine, commit the measurement with
#   python benchmarks/bench_recipes.py report --rows <OUT>/recipes_rows.jsonl --out-dir /tmp/c --commit-results
# Every step runs under `timeout`, capped so that the report keeps REPORT_RESERVE seconds of BUDGET
# (default 420 s); a failing or killed step does not stop the next one (set -u, no set -e).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
ROOT=$PWD
PY=${PY:-python3}
DRY=${DRY:-0}
OUT=${OUT:-$(mktemp -d /tmp/campaign_c.XXXX)}
if [ "$DRY" = 1 ]; then BUDGET=${BUDGET:-180}; else BUDGET=${BUDGET:-420}; fi
REPORT_RESERVE=${REPORT_RESERVE:-25}
mkdir -p "$OUT"
LOG=$OUT/campaign_c.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
T0=$(date +%s)
ROWS=$OUT/recipes_rows.jsonl
STEPS_CSV=$OUT/steps.csv
echo "step,rc,seconds,limit" >"$STEPS_CSV"
BENCH=(benchmarks/bench_recipes.py)
if [ "$DRY" = 1 ]; then
  # one torch thread: on a crowded 2-core machine OpenMP's spinning threads made a tiny step take 10 s instead of 0.5 s
  MEASURE=(measure --smoke --device cpu --n-encode 16 --threads 1 --rows "$ROWS"); export OMP_NUM_THREADS=1
else
  MEASURE=(measure --device cuda --rows "$ROWS")
fi

elapsed() { echo $(( $(date +%s) - T0 )); }
secs_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}'; }
# cap WANT: WANT seconds, or less so that REPORT_RESERVE seconds of the budget stay (0 when none are left)
cap() { local left=$(( BUDGET - $(elapsed) - REPORT_RESERVE )); local t=$1; [ "$left" -lt "$t" ] && t=$left; [ "$t" -lt 0 ] && t=0; echo "$t"; }
# step NAME WANT MIN CMD...: run CMD under timeout (at most WANT s); skipped when fewer than MIN s are left
step() {
  local name=$1 lim; lim=$(cap "$2"); local min=$3; shift 3
  if [ "$lim" -lt "$min" ]; then
    echo "=================== [$(elapsed)s] step $name skipped: ${lim}s left before the report, needs ${min}s"
    echo "$name,skipped,0,$lim" >>"$STEPS_CSV"; return 0
  fi
  echo; echo "=================== [$(elapsed)s] step $name (limit ${lim}s): $*"
  local s; s=$(date +%s.%N)
  timeout -k 5 "$lim" "$@"
  local rc=$?
  echo "=================== [$(elapsed)s] step $name: rc=$rc in $(secs_since "$s")s"
  echo "$name,$rc,$(secs_since "$s"),$lim" >>"$STEPS_CSV"
}

echo "campaign C: DRY=$DRY PY=$PY OUT=$OUT BUDGET=${BUDGET}s start $(date -u +%FT%TZ) in $ROOT," \
     "git $(git rev-parse --short HEAD 2>/dev/null) ($(git status --short 2>/dev/null | wc -l) changed files)"

# ------------------------------------------------------------------ environment (what the package needs)
{ timeout 15 nvidia-smi || echo "(nvidia-smi unavailable)"; echo "cpus: $(nproc --all)"; free -g; } >"$OUT/env.txt" 2>&1
head -n 20 "$OUT/env.txt"
CHECK_PKG=1; [ "$DRY" = 1 ] && CHECK_PKG=0   # in DRY the measure steps import the package anyway
CHECK_PKG=$CHECK_PKG timeout 60 "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import importlib, importlib.metadata as md, importlib.util, os, sys
print("python", sys.version.split()[0], sys.executable)
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
# needed by benchmarks/bench_recipes.py: torch, timm, numpy, and through timm/hashlib_vit yaml, tqdm,
# huggingface_hub, safetensors, PIL; torchvision for AlexNet. The rest is optional (not imported by it).
# Looked up without importing (fast): installed or MISSING, with the distribution's version.
for m, dist in [("timm", "timm"), ("numpy", "numpy"), ("yaml", "PyYAML"), ("tqdm", "tqdm"),
                ("huggingface_hub", "huggingface_hub"), ("safetensors", "safetensors"),
                ("torchvision", "torchvision"), ("PIL", "pillow"), ("pytest", "pytest"), ("pandas", "pandas"),
                ("scipy", "scipy"), ("sklearn", "scikit-learn"), ("numba", "numba"), ("faiss", "faiss-cpu"),
                ("matplotlib", "matplotlib")]:
    if importlib.util.find_spec(m) is None:
        print(f"  {m:16s} MISSING")
        continue
    try:
        v = md.version(dist)
    except md.PackageNotFoundError:
        v = "?"
    print(f"  {m:16s} {v}")
if os.environ["CHECK_PKG"] == "1":
    for m in ["hashlib_vit.models", "hashlib_vit.losses", "hashlib_vit.train", "hashlib_vit.retrieval",
              "hashlib_vit.experiment", "hashlib_vit.data.views"]:
        try:
            importlib.import_module(m)
            print(f"  {m:28s} imports")
        except Exception as e:
            print(f"  {m:28s} IMPORT FAILED: {type(e).__name__}: {e}")
EOF

# ------------------------------------------------------------------ the recipes, most important first
# each line is one python process (a crash or OOM loses only that line; within a line each recipe has
# its own try/except and its JSON line is written as soon as it is measured)
step transhash_mgvt 90 25 "$PY" "${BENCH[@]}" "${MEASURE[@]}" transhash_mgvt
# the ViT-B/16 backbones load a stand-in .pth checkpoint (hashlib_vit.models.standin, where the branch has it;
# otherwise, and on any loading error, random weights: recorded in the row as standin / standin_error)
step vitb16_recipes 110 30 "$PY" "${BENCH[@]}" "${MEASURE[@]}" --standin pth aevit_hsc slvit_hcl vitb16_cls_linear
step report_1 "$REPORT_RESERVE" 5 "$PY" "${BENCH[@]}" report --quiet --rows "$ROWS" --out-dir "$OUT"
CNNS=(resnet50_224 alexnet_224 resnet50_32 alexnet_64)
[ "$DRY" = 1 ] && CNNS=(resnet50_32 alexnet_64)   # at smoke scale the 224-px ones are the same 64-px models
step cnns 70 25 "$PY" "${BENCH[@]}" "${MEASURE[@]}" "${CNNS[@]}"
step extras 60 25 "$PY" "${BENCH[@]}" "${MEASURE[@]}" aevit_hsc_2views vitb32_cls_linear
if [ "$DRY" = 1 ]; then
  echo "=================== torch.compile step skipped in DRY (CPU inductor compile takes minutes)"
else
  step compile_vitb16 120 90 "$PY" "${BENCH[@]}" "${MEASURE[@]}" --compile --no-flops vitb16_cls_linear
fi

# ------------------------------------------------------------------ report (always), then tests if time is left
REPORT_RESERVE=0
step report 30 1 "$PY" "${BENCH[@]}" report --rows "$ROWS" --out-dir "$OUT"
if [ "$DRY" != 1 ] && "$PY" -c "import pytest" 2>/dev/null; then
  # fast, CUDA-relevant subset; only with the time that is left
  step pytest_models 60 40 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_models_losses.py
fi
echo; echo "--- steps"; cat "$STEPS_CSV"
echo "--- rows: $(cat "$ROWS" 2>/dev/null | wc -l) in $ROWS; failed: $(cat "$ROWS" 2>/dev/null | grep -c '"error"')"
ls -la "$OUT"
echo "campaign C done in $(elapsed)s"
