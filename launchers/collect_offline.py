"""Records the offline data of the UniIntervene models for one task.

  python launchers/collect_offline.py --task=pick-place --out=data/offline/pick-place \
      [--num_demos=20 --num_rollouts=30 --num_assisted=30 --bc_steps=300]

Writes demos (scripted expert), weak-policy rollouts (BC on the demos, few steps) and
operator-assisted rollouts of the same policy, as episode files plus ``manifest.json``
(see ``uniintervene_jax/offline_data.py``). Reruns only add what is missing.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_TASK = flags.DEFINE_string("task", "pick-place", "Stand-in task name.")
_OUT = flags.DEFINE_string("out", "", "Output folder (default data/offline/TASK).")
_NUM_DEMOS = flags.DEFINE_integer("num_demos", 20, "Successful scripted demos.")
_NUM_ROLLOUTS = flags.DEFINE_integer("num_rollouts", 30, "Weak-policy episodes without the operator.")
_NUM_ASSISTED = flags.DEFINE_integer("num_assisted", 30, "Weak-policy episodes with the simulated operator.")
_BC_STEPS = flags.DEFINE_integer("bc_steps", 300, "BC updates of the weak base policy.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the BC policy and the episode seeds.")
_HIDDEN = flags.DEFINE_string("hidden_dims", "256,256", "BC policy MLP widths.")


def main(argv):
    del argv
    from configs.train import get_config
    from uniintervene_jax.offline_data import collect_offline_data

    config = get_config(f"{_TASK.value},hil_serl")
    config.agent.hidden_dims = tuple(int(x) for x in _HIDDEN.value.split(","))
    out = os.path.abspath(_OUT.value or os.path.join("data", "offline", _TASK.value))
    manifest = collect_offline_data(
        config, out, num_demos=_NUM_DEMOS.value, num_rollouts=_NUM_ROLLOUTS.value,
        num_assisted=_NUM_ASSISTED.value, bc_steps=_BC_STEPS.value, seed=_SEED.value,
    )
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    app.run(main)
