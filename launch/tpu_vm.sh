#!/usr/bin/env bash
# Run a jdtp config on a Cloud TPU VM (single host or pod slice), one command per phase.
#
#   export NAME=jdtp-pod ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 RUNTIME_VERSION=tpu-ubuntu2204-base
#   export BUCKET=my-bucket                      # workdir and TFDS data live in gs://$BUCKET
#   export CONFIG=configs/vgg_imagenet32.py:tpu  # any config[:variants]
#   launch/tpu_vm.sh create    # create the TPU VM
#   launch/tpu_vm.sh setup     # clone jdtp on every worker and install jax[tpu] + jdtp
#   launch/tpu_vm.sh run       # train on all workers (--distributed), workdir on GCS
#   launch/tpu_vm.sh delete    # delete the TPU VM
#
# Data: prepare the TFDS dataset once on any machine with network (see README
# "Scaling out"), copy it to gs://$BUCKET/tensorflow_datasets; workers read it via TFDS_DATA_DIR.
set -euo pipefail
: "${NAME:?}" "${ZONE:?}"
# setup copies this checkout's tracked files to every worker; set REPO_URL (and BRANCH)
# to git clone on the workers instead.
BRANCH=${BRANCH:-main}
ssh_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command "$1"; }

case "${1:-}" in
  create)
    : "${ACCELERATOR_TYPE:?}" "${RUNTIME_VERSION:?}"
    gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
    ;;
  setup)
    if [ -n "${REPO_URL:-}" ]; then
      ssh_all "rm -rf jdtp && git clone --branch $BRANCH $REPO_URL jdtp"
    else
      top=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
      tarball=$(mktemp -d)/jdtp.tar.gz
      git -C "$top" archive --format=tar.gz --prefix=jdtp/ HEAD > "$tarball"
      gcloud compute tpus tpu-vm scp "$tarball" "$NAME":~/jdtp.tar.gz --zone="$ZONE" --worker=all
      ssh_all "rm -rf jdtp && tar xzf jdtp.tar.gz"
    fi
    ssh_all "set -e; cd jdtp; python3 -m venv .venv; . .venv/bin/activate; pip install -U pip; \
      pip install -U 'jax[tpu]'; pip install -e . tensorflow-cpu"
    ;;
  run)
    : "${BUCKET:?}" "${CONFIG:?}"
    WORKDIR=${WORKDIR:-gs://$BUCKET/jdtp/$(date +%Y%m%d_%H%M%S)}
    # The same command on every worker: each process loads its slice of every batch.
    # Wrap in tmux/nohup for long runs; rerunning with the same WORKDIR resumes.
    ssh_all "cd jdtp && . .venv/bin/activate && TFDS_DATA_DIR=gs://$BUCKET/tensorflow_datasets \
      python -m jdtp.main --config=$CONFIG --workdir=$WORKDIR --distributed ${EXTRA_FLAGS:-}"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
    ;;
  *)
    sed -n '2,14p' "$0"; exit 2
    ;;
esac
