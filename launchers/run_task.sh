#!/usr/bin/env bash
# Collects the scripted demos if needed, then runs learner and actor side by side on this
# machine and waits for both. Usage:
#   launchers/run_task.sh [TASK[,ALGORITHM]] [--config.FIELD=VALUE ...]
# Results: runs/TASK/ALGORITHM/seedN/summary.json (SR, IR, ...), logs in the same folder.
set -euo pipefail
source "$(dirname "$0")/_common.sh"
TASK="${SPEC%%,*}"
NUM_DEMOS="${NUM_DEMOS:-20}"
python launchers/collect_demos.py --task="$TASK" --num_demos="$NUM_DEMOS"
launchers/learner.sh "$SPEC" "${ARGS[@]}" &
LEARNER_PID=$!
trap 'kill "$LEARNER_PID" 2>/dev/null || true' EXIT
launchers/actor.sh "$SPEC" "${ARGS[@]}"
wait "$LEARNER_PID"
trap - EXIT
