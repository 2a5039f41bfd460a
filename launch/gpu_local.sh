#!/usr/bin/env bash
# Single host, all local GPUs, one process: the batch is sharded over every visible device.
#
#   launch/gpu_local.sh configs/vgg_cifar10.py:gpu workdirs/vgg_cifar10 [--config.seed=1 ...]
#
# Restrict devices with CUDA_VISIBLE_DEVICES=0,1,2,3. The global batch stays the config's
# (the paper's), so results do not depend on the GPU count up to reduction order.
set -euo pipefail
CONFIG=${1:?config[:variant]}; WORKDIR=${2:?workdir}; shift 2
python -c "import jax; print('devices:', jax.devices())"
exec python -m jdtp.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
