#!/usr/bin/env bash
# Table 1 (MNIST and Fashion-MNIST rows, the paper's full budget: 40 epochs, DTP and BP) on one GPU.
#
#   TFDS_DATA_DIR=/path/to/tfds SEEDS="0 1 2 3 4" PARALLEL=4 bash launch/table1_gpu.sh [OUT_DIR]
#
# 1. installs jax[cuda12] and jdtp into .venv-gpu (reused when present) and checks the GPU;
# 2. times the DTP and BP steps of both configs on this GPU (jdtp.benchmark, a few steps each)
#    and prints the expected duration of the whole sweep from those step times before starting;
# 3. runs the sweeps (jdtp.sweep; PARALLEL runs share the GPU, memory is not preallocated),
#    resumable: rerun the same command after an interruption;
# 4. prints the tables (jdtp.tables) and writes CSV, Markdown and PNGs to OUT_DIR/tables_*.
# On the 2-core CPU of the development machines one epoch takes ~13 min (DTP, MNIST) and ~25 min
# (DTP, Fashion-MNIST), so the full budget (40 epochs × 5 seeds × 2 datasets) is a GPU job.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/table1_gpu}
SEEDS=${SEEDS:-0 1 2 3 4}
PARALLEL=${PARALLEL:-4}
VENV=${VENV:-.venv-gpu}
: "${TFDS_DATA_DIR:?point TFDS_DATA_DIR at prepared mnist and fashion_mnist (README: Data)}"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "jax[cuda12]" -e .
"$VENV/bin/python" -c "import jax, sys; print(jax.devices()); sys.exit(jax.default_backend() != 'gpu')" \
  || { echo "JAX does not see a GPU" >&2; exit 1; }
export XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT"
"$VENV/bin/python" -m jdtp.benchmark --configs=configs/lenet_mnist.py,configs/lenet_fmnist.py --repeats=3 \
  --out="$OUT/step_times.json" > /dev/null
"$VENV/bin/python" - "$OUT/step_times.json" "$SEEDS" "$PARALLEL" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
seeds, parallel = len(sys.argv[2].split()), int(sys.argv[3])
bp_batch = {"mnist": 166, "fashion_mnist": 140}  # the BP baselines' batch sizes (configs)
total = 0.0
for r in results:
    ds = "fashion_mnist" if "fmnist" in r["config"] else "mnist"
    dtp = 60000 // r["batch_size"] * 40 * r["dtp"]["step_s_median"]
    bp = 60000 // bp_batch[ds] * 40 * r["bp"]["step_s_median"] * bp_batch[ds] / r["batch_size"]
    print(f"{ds}: DTP {dtp / 3600:.2f} h, BP {bp / 3600:.2f} h per seed (40 epochs, from this GPU's step times)")
    total += seeds * (dtp + bp)
print(f"expected duration: {total / 3600 / max(1, parallel):.1f} h with {parallel} runs at a time "
      f"({total / 3600:.1f} GPU-hours sequential; parallel runs may share the GPU less than perfectly)")
PY
for ds in mnist fmnist; do
  "$VENV/bin/python" -m jdtp.sweep --sweep=configs/sweeps/table1_$ds.py --dir="$OUT/table1_$ds" \
    --only=dtp,bp --seeds="${SEEDS// /,}" --parallel="$PARALLEL" --set=num_epochs=40 \
    --set=data.data_dir="$TFDS_DATA_DIR"
done
for ds in mnist fmnist; do
  "$VENV/bin/python" -m jdtp.tables --sweep_dir="$OUT/table1_$ds" --out="$OUT/tables_$ds" \
    --title="Table 1, $ds, 40 epochs (GPU)"
done
