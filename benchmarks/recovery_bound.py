"""What limits the IR cut: how often the simulated operator takes over when the recovery policy
drives every step (an upper bound on what any trigger could achieve with that policy), against
the scripted expert driving with the same chunking.

  python benchmarks/recovery_bound.py --run_dirs=benchmarks/results/compare/runs/pick-place/hil_serl+uniintervene/seed0 \
      --episodes=10 --out=benchmarks/results/compare/recovery_bound

For every run folder (a finished ``hil_serl+uniintervene`` run: its learner saved the online
models under ``uniintervene/``) and for the scripted expert of the same task, ``--episodes``
fresh episodes (seeds 50000+) run with the simulated operator on top and one driver for every
step the operator does not control:

* ``recovery, open-loop chunks``: the recovery policy's H = 8 chunk toward the memory goal
  retrieved at the chunk's start, executed open loop (what the gate does once triggered);
* ``recovery, re-predicted every step``: the same policy and goal, chunk re-predicted from each
  new observation and only its first action executed;
* ``expert, actions held h steps`` (h = 8, 4, 1): the operator's own scripted expert (privileged
  state), each action repeated h steps: the cost of open-loop chunks alone.

While the operator is in control the driver's action is the robot's proposal its hand-back rule
judges (as with ``uniintervene.propose_under_human``). Reported per driver: IR (operator steps /
all steps, pooled over the episodes as in the online runs), the per-episode mean of the ratio,
the fraction of episodes with no operator step, success rate, and the operator's takeover reasons (``disagreement``: the robot's
actions differ from the expert's by more than 0.5 on average over 10 steps; ``stall``: no
progress for W steps).
"""

import json
import os
import sys

from absl import app, flags

from drivers import ExpertDriver, RecoveryDriver, drive

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_RUN_DIRS = flags.DEFINE_list("run_dirs", [], "Finished hil_serl+uniintervene run folders.")
_EPISODES = flags.DEFINE_integer("episodes", 10, "Episodes per driver.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/compare/recovery_bound", "Output prefix (.md, .json).")


def main(argv):
    del argv
    from configs.train import get_config
    from serl_ext.loop import common
    from uniintervene_jax.gate import NetworkGateModels
    from uniintervene_jax.online import OnlineUniIntervene

    results = []
    tasks_done = set()
    for run_dir in _RUN_DIRS.value:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        task = summary["task"]
        config = get_config(f"{task},{summary['algorithm']}")
        env = common.make_env(config, 0, with_operator=False)
        spec, action_dim = common.observation_spec(env), int(env.action_space.shape[0])
        env.close()
        ui = OnlineUniIntervene(config, spec, action_dim, [])
        if not ui.restore(os.path.join(run_dir, "uniintervene")):
            raise FileNotFoundError(f"{run_dir}/uniintervene has no saved models")
        models = NetworkGateModels(config, spec, action_dim)
        models.load(ui.payload())
        for name, replan in (("recovery, open-loop chunks (H=8)", 8), ("recovery, re-predicted every step", 1)):
            r = drive(config, RecoveryDriver(models, replan), _EPISODES.value)
            results.append({"task": task, "run": os.path.relpath(run_dir, REPO), "driver": name, **r})
            print(results[-1], flush=True)
        if task not in tasks_done:
            tasks_done.add(task)
            for hold in (8, 4, 1):
                r = drive(config, ExpertDriver(task, hold), _EPISODES.value)
                results.append({"task": task, "run": "-", "driver": f"expert, actions held {hold} steps", **r})
                print(results[-1], flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value + ".json", "w") as f:
        json.dump(results, f, indent=2)
    lines = ["# Recovery-policy bound (what limits the IR cut)", "",
             f"Command: `python benchmarks/recovery_bound.py --run_dirs={','.join(_RUN_DIRS.value)} "
             f"--episodes={_EPISODES.value} --out={_OUT.value}`", "",
             "The driver acts on every step the simulated operator does not control (module docstring "
             "of benchmarks/recovery_bound.py). IR = operator steps / all steps, pooled over the episodes "
             "(as in the online runs); per-episode mean = the mean of each episode's ratio (short "
             "autonomous episodes weigh as much as long rescued ones); autonomous = episodes with no "
             "operator step.", "",
             "| task | run | driver | IR | IR per-episode mean | autonomous | success | operator steps by takeover reason |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["takeover_step_reasons"].items())) or "-"
        lines.append(f"| {r['task']} | {r['run']} | {r['driver']} | {r['ir']:.3f} | "
                     f"{r['ir_episode_mean']:.3f} | {r['autonomous_rate']:.2f} | {r['success_rate']:.2f} | {reasons} |")
    with open(_OUT.value + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
