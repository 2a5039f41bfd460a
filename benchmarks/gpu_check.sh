#!/usr/bin/env bash
# GPU benchmark of the DTP and BP train steps: every architecture, both feedback modes, one table.
#
# Run from a checkout on a machine with an NVIDIA GPU and CUDA 12 drivers:
#     bash benchmarks/gpu_check.sh            # JSON in results/gpu_check/, the table on stdout
#
# Creates .venv-gpu (reused when present), installs jax[cuda12] and this package, checks that
# JAX sees a GPU, then times (3 steps each after compilation, interleaved) the DTP step in the
# sequential and the concurrent feedback mode and the BP step of LeNet (batch 100, the authors'),
# SimpleVGG (batch 128) and ResNet-18 (batch 128) on CIFAR shapes, with XLA's library convolutions
# (conv_impl=auto off-CPU), twice: with the G-independent terms of every L-DRL iteration computed
# before the loop (dtp.fb_chunk_mib=0: automatic, up to 1 GiB of terms per layer on a GPU, so the
# hoisted half runs K-way parallel) and with one iteration per chunk (the per-iteration order of
# work, for comparison). About 8-12 minutes of GPU time in all, most of it pip and compilation.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-gpu}"
PYTHON="${PYTHON:-python3}"
REPEATS="${REPEATS:-3}"
OUT="${OUT:-results/gpu_check}"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "jax[cuda12]" -e .

"$VENV/bin/python" - <<'PY'
import jax

backend = jax.default_backend()
print(f"jax {jax.__version__}, backend {backend}, devices {jax.devices()}")
if backend != "gpu":
    raise SystemExit("JAX does not see a GPU: check the CUDA 12 driver and the jax[cuda12] install")
PY

mkdir -p "$OUT"
run() {  # name, extra flags
  for chunk in 0 1e-9; do  # hoisted (automatic chunks), then one iteration per chunk
    "$VENV/bin/python" -m jdtp.benchmark --configs="$1" --repeats="$REPEATS" --conv_impl=auto \
      --set=dtp.feedback_mode=sequential --variant=dtp_concurrent:dtp.feedback_mode=concurrent \
      --set=dtp.fb_chunk_mib="$chunk" --out="$OUT/$2_chunk$chunk.json" "${@:3}"
  done
}
run lenet lenet_b100 --batch_size=lenet=100
run vgg vgg_b128
run configs/resnet18_cifar10.py resnet18_b128 --batch_size=128

"$VENV/bin/python" - "$OUT"/*.json <<'PY'
import json
import sys

print()
print(f"{'device':22s} {'config':28s} {'batch':>5s} {'chunks':>14s} {'DTP seq s':>9s} {'DTP conc s':>10s} "
      f"{'loop it. seq/conc':>17s} {'BP s':>8s} {'DTP img/s':>9s} {'BP img/s':>9s} {'DTP/BP':>7s} {'mem GiB':>8s}")
for path in sys.argv[1:]:
    with open(path) as f:
        data = json.load(f)
    device = data["environment"]["device_kind"]
    for r in data["results"]:
        seq, conc, bp = r["dtp"], r.get("dtp_concurrent", {}), r["bp"]
        it = seq["fb_loop_iterations"]
        mem = (r.get("device_memory") or {}).get("peak_bytes_in_use", float("nan")) / 2**30
        chunks = ",".join(str(c) for c in seq.get("fb_chunks", []))
        print(f"{device[:22]:22s} {r['config'][-28:]:28s} {r['batch_size']:5d} {chunks[-14:]:>14s} {seq['step_s_median']:9.3f} "
              f"{conc.get('step_s_median', float('nan')):10.3f} {str(it['sequential']) + '/' + str(it['concurrent']):>17s} "
              f"{bp['step_s_median']:8.4f} {seq['images_per_s']:9.0f} {bp['images_per_s']:9.0f} "
              f"{r['time_ratio_dtp_bp']:7.1f} {mem:8.2f}")
PY
