#!/usr/bin/env bash
# Evaluates the newest checkpoint of a run: launchers/eval.sh TASK[,ALGORITHM] [--eval_episodes=50]
set -euo pipefail
source "$(dirname "$0")/_common.sh"
exec python -m serl_ext.loop.main --eval --config="configs/train.py:${SPEC}" "${ARGS[@]}"
