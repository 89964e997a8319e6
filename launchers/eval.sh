#!/usr/bin/env bash
# Evaluates a checkpoint of a run on K fixed-seed episodes and prints SR and return with 95%
# intervals. Usage:
#   launchers/eval.sh TASK[,ALGORITHM] [--config.FIELD=VALUE ...] [--checkpoint_step=N]
#       [--eval_episodes=K] [--stochastic] [--gate=auto|on|off] [--videos=N] [--camera=NAME]
# Give the run's own overrides (seed, run_root, ...) so that the same run folder is found.
# Writes eval.json and eval/step{S}_{deterministic|stochastic}_{gate|policy}.json there; an
# unknown --checkpoint_step lists the kept steps (learner.checkpoints_to_keep keeps more).
set -euo pipefail
source "$(dirname "$0")/_common.sh"
exec python -m serl_ext.loop.main --eval --config="configs/train.py:${SPEC}" "${ARGS[@]}"
