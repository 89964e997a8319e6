#!/usr/bin/env bash
# Collects the scripted demos if needed, then runs learner and actor side by side on this
# machine and waits for both. Usage:
#   launchers/run_task.sh [TASK[,ALGORITHM]] [--config.FIELD=VALUE ...]
# The terminal shows the actor's status line (env steps, SR20, IR, learner step) and its
# messages; the learner runs --quiet (its console goes to logs/learner.log, a fatal error also
# here). The run ends with a result table (task, method, env steps, minutes, final SR, IR, run
# folder). Run folder: runs/TASK/ALGORITHM/seedN/ (summary.json, logs/actor.log, logs/learner.log).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
TASK="${SPEC%%,*}"
NUM_DEMOS="${NUM_DEMOS:-20}"
DEMO_FLAGS=()
for arg in "${ARGS[@]}"; do  # the demos the learner will read: --config.demos.path / .num_demos
  case "$arg" in
    --config.demos.path=*) DEMO_FLAGS+=("--out=${arg#*=}") ;;
    --config.demos.num_demos=*) NUM_DEMOS="${arg#*=}" ;;
    --config.robot.*|--config.human_input=*) DEMO_FLAGS+=("$arg") ;;  # ur: tasks (teleop demos)
  esac
done
# gym:ENV_ID tasks have no scripted expert: their demos, if any, are the user's own files.
if [[ "$TASK" != gym:* && "$NUM_DEMOS" != "0" ]]; then
  python launchers/collect_demos.py --task="$TASK" --num_demos="$NUM_DEMOS" "${DEMO_FLAGS[@]}"
fi
launchers/learner.sh "$SPEC" "${ARGS[@]}" --quiet &
LEARNER_PID=$!
trap 'kill "$LEARNER_PID" 2>/dev/null || true' EXIT
launchers/actor.sh "$SPEC" "${ARGS[@]}"
LEARNER_STATUS=0
wait "$LEARNER_PID" || LEARNER_STATUS=$?
trap - EXIT
if [[ "$LEARNER_STATUS" -ne 0 ]]; then
  echo "the learner exited with status $LEARNER_STATUS; its log: logs/learner.log in the run folder above" >&2
  exit "$LEARNER_STATUS"
fi
