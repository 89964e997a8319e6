#!/usr/bin/env bash
# The actor process (robot PC). Usage:
#   launchers/actor.sh [TASK[,ALGORITHM]] [--config.FIELD=VALUE ...]
# e.g. launchers/actor.sh pick-place,hil_serl --config.seed=1 --config.transport.ip=10.0.0.5
set -euo pipefail
source "$(dirname "$0")/_common.sh"
export XLA_FLAGS="${ACTOR_XLA_FLAGS:---xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1}"
exec python -m serl_ext.loop.main --actor --config="configs/train.py:${SPEC}" "${ARGS[@]}"
