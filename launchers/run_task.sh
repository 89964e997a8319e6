#!/usr/bin/env bash
# Collects the scripted demos if needed, then runs learner and actor side by side on this
# machine and waits for both. Usage:
#   launchers/run_task.sh [TASK[,ALGORITHM]] [--config.FIELD=VALUE ...]
# The terminal shows the actor's status line (env steps, SR20, IR, learner step) and its
# messages; the learner runs --quiet (its console goes to logs/learner.log, a fatal error also
# here). The run ends with a result table (task, method, env steps, minutes, final SR, IR, run
# folder). Run folder: runs/TASK/ALGORITHM/seedN/ (summary.json, logs/actor.log, logs/learner.log).
# --config.learner.num_actors=N starts N actors into the one learner (actor k > 0 in
# runs/.../seedN/actors/actorK/).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
TASK="${SPEC%%,*}"
ALGORITHM="hil_serl"
[[ "$SPEC" == *,* ]] && ALGORITHM="${SPEC#*,}"
# The demos the learner will read: collect_demos.py builds the run's env (algorithm, --config.env.*,
# --config.robot.*, --config.demos.*) and writes to the run's demo folder (serl_ext/loop/
# demo_folders.py: demos/TASK for state, demos/TASK-pixelsS for images, ...). NUM_DEMOS=N (env)
# overrides config.demos.num_demos.
DEMO_FLAGS=("--algorithm=$ALGORITHM")
[[ -n "${NUM_DEMOS:-}" ]] && DEMO_FLAGS+=("--num_demos=$NUM_DEMOS")
DEMO_PATH_GIVEN=0
for arg in "${ARGS[@]}"; do
  case "$arg" in
    --config.demos.path=*) DEMO_PATH_GIVEN=1; DEMO_FLAGS+=("$arg") ;;
    --config.env.*|--config.robot.*|--config.demos.*|--config.human_input=*) DEMO_FLAGS+=("$arg") ;;
  esac
done
# gym:ENV_ID tasks have no scripted expert: their demos, if any, are the user's own files.
if [[ "$TASK" != gym:* ]]; then
  DIR_FILE="$(mktemp)"
  python launchers/collect_demos.py --task="$TASK" "${DEMO_FLAGS[@]}" --dir_file="$DIR_FILE"
  DEMO_DIR="$(cat "$DIR_FILE")"
  rm -f "$DIR_FILE"
  # Learner and actor get the folder when it is not the one they default to (serl_ext/loop/
  # common.py:demo_dir_for: demos/TASK), e.g. image demos.
  if [[ "$DEMO_PATH_GIVEN" == 0 && "$DEMO_DIR" != "$PWD/demos/$TASK" ]]; then
    ARGS+=("--config.demos.path=$DEMO_DIR")
  fi
fi
NUM_ACTORS=1
for arg in "${ARGS[@]}"; do
  case "$arg" in --config.learner.num_actors=*) NUM_ACTORS="${arg#*=}" ;; esac
done
launchers/learner.sh "$SPEC" "${ARGS[@]}" --quiet &
LEARNER_PID=$!
PIDS=("$LEARNER_PID")
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
# With --config.learner.num_actors=N, actors 1..N-1 run --quiet in the background (their logs in
# RUN_FOLDER/actors/actorK/logs/), actor 0 in the foreground.
ACTOR_STATUS=0
for ((k = 1; k < NUM_ACTORS; k++)); do
  launchers/actor.sh "$SPEC" "${ARGS[@]}" --config.actor.actor_id="$k" --quiet &
  PIDS+=("$!")
done
launchers/actor.sh "$SPEC" "${ARGS[@]}" --config.actor.actor_id=0
for pid in "${PIDS[@]:1}"; do
  wait "$pid" || ACTOR_STATUS=$?
done
LEARNER_STATUS=0
wait "$LEARNER_PID" || LEARNER_STATUS=$?
trap - EXIT
if [[ "$ACTOR_STATUS" -ne 0 ]]; then
  echo "an actor exited with status $ACTOR_STATUS; see logs/actor.log under RUN_FOLDER/actors/actorK" >&2
fi
if [[ "$LEARNER_STATUS" -ne 0 ]]; then
  echo "the learner exited with status $LEARNER_STATUS; its log: logs/learner.log in the run folder above" >&2
  exit "$LEARNER_STATUS"
fi
exit "$ACTOR_STATUS"
