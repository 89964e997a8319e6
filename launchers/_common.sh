# Sourced by the launchers. Sets SPEC (TASK[,ALGORITHM]) and ARGS (the remaining flags).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SPEC="pick-place,hil_serl"
if [[ $# -gt 0 && "$1" != --* ]]; then
  SPEC="$1"
  shift
fi
ARGS=("$@")
export PYTHONUNBUFFERED=1
# Devices: serl_ext.loop.main picks each process's device (serl_ext/devices.py): the learner an
# accelerator when jax sees one, else the CPU (LEARNER_DEVICE=auto|cpu|gpu); actor and eval the
# CPU (ACTOR_DEVICE, EVAL_DEVICE). An explicit JAX_PLATFORMS still limits what jax starts.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
