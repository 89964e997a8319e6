#!/usr/bin/env bash
# The learner process (GPU/CPU box). Usage:
#   launchers/learner.sh [TASK[,ALGORITHM]] [--config.FIELD=VALUE ...]
# Listening on another machine's network: --config.transport.bind_address=0.0.0.0
set -euo pipefail
source "$(dirname "$0")/_common.sh"
exec python -m serl_ext.loop.main --learner --config="configs/train.py:${SPEC}" "${ARGS[@]}"
