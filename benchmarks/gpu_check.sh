#!/usr/bin/env bash
# GPU benchmark of the DTP and BP train steps (LeNet and SimpleVGG on CIFAR-10 shapes).
#
# Run from a checkout of the repository on a machine with an NVIDIA GPU and CUDA 12
# drivers:
#     bash benchmarks/gpu_check.sh            # results in results/benchmark_gpu.json
#
# It creates a virtual environment (.venv-gpu, reused when present), installs
# jax[cuda12] and this package, checks that JAX sees a GPU, and runs jdtp.benchmark
# with conv_impl=auto, which picks XLA's (cuDNN) convolutions off-CPU. With 3 timed
# steps per algorithm the whole script takes a few minutes (mostly the pip install
# and compilation).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-gpu}"
PYTHON="${PYTHON:-python3}"
REPEATS="${REPEATS:-3}"
OUT="${OUT:-results/benchmark_gpu.json}"

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

mkdir -p "$(dirname "$OUT")"
# LeNet at the issue's batch 128 and the paper's batch 100 is one run per batch size.
"$VENV/bin/python" -m jdtp.benchmark --configs=lenet,vgg --repeats="$REPEATS" --conv_impl=auto --out="$OUT"
"$VENV/bin/python" -m jdtp.benchmark --configs=lenet --batch_size=lenet=100 --repeats="$REPEATS" \
  --conv_impl=auto --out="${OUT%.json}_lenet_b100.json"

"$VENV/bin/python" - "$OUT" "${OUT%.json}_lenet_b100.json" <<'PY'
import json
import sys

rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        data = json.load(f)
    env = data["environment"]
    for r in data["results"]:
        rows.append((env["device_kind"], r))
print()
print(f"{'device':24s} {'config':6s} {'batch':>5s} {'DTP s':>8s} {'BP s':>8s} {'time ratio':>10s} "
      f"{'FLOP ratio':>10s} {'DTP GFLOP/s':>11s} {'conv peak':>9s} {'matmul peak':>11s} {'mem GiB':>8s}")
for device, r in rows:
    peaks = r.get("peaks", {})
    conv = peaks.get("largest_conv", {}).get(peaks.get("largest_conv_jdtp", ""), {}).get("gflops", float("nan"))
    mm = peaks.get("matmul", {}).get("gflops", float("nan"))
    mem = (r.get("device_memory") or {}).get("peak_bytes_in_use", float("nan")) / 2**30
    print(f"{device[:24]:24s} {r['config']:6s} {r['batch_size']:5d} {r['dtp']['step_s_median']:8.3f} "
          f"{r['bp']['step_s_median']:8.4f} {r['time_ratio_dtp_bp']:10.1f} {r['flop_ratio_dtp_bp']:10.1f} "
          f"{r['dtp']['gflops_achieved']:11.0f} {conv:9.0f} {mm:11.0f} {mem:8.2f}")
PY
