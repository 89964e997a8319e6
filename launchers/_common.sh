# Sourced by the launchers. Sets SPEC (TASK[,ALGORITHM]) and ARGS (the remaining flags).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SPEC="pick-place,hil_serl"
if [[ $# -gt 0 && "$1" != --* ]]; then
  SPEC="$1"
  shift
fi
ARGS=("$@")
export PYTHONUNBUFFERED=1
# XLA on the CPU: the actor runs single-threaded so that it and the learner share two cores well.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
