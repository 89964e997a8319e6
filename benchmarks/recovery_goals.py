"""Which goals to train the online recovery policy on: hindsight ``o_{t+k}`` or retrieved.

  python benchmarks/recovery_goals.py --tasks=pick-place,assembly,peg-insert-side --episodes=20 \
      --out=benchmarks/results/recovery_goals

At run time the gate conditions the recovery policy on a goal retrieved from the recovery
memory, i.e. on a state of *another* episode (other object and target positions). The offline
pipeline trains on hindsight goals ``o_{t+k}`` of the same episode. This benchmark trains the
same recovery policy (the online config's continuous head) on the same data several ways and lets
each drive, with the simulated operator on top, every step the operator does not control
(open-loop H = 8 chunks toward the goal retrieved at each chunk's start, as the gate does; the
driver of ``benchmarks/recovery_bound.py``):

* ``future``: ``uniintervene.recovery_goals = "future"``, ``recovery_min_gain = 0``;
* ``retrieved``: goals retrieved for each anchor like the gate does (own episode excluded),
  ``recovery_min_gain = 0``;
* ``retrieved, gain > 0.25``: also drop operator anchors whose value rises by 0.25 or less over
  the goal offset;
* ``... half demos``: also draw half of every batch from the demo pairs
  (``recovery_demo_fraction = 0.5``);
* ``retrieved, demos only``: every batch from the demo pairs (the operator's segments unused);
* ``retrieved, gain > 0.25, all steps of successes``: also every step of the successful
  assisted episodes, whatever acted (``recovery_anchors = "all"``).

The first five anchor only the operator's segments in the assisted episodes
(``recovery_anchors = "interventions"``, the online default).

Batches are uniform over all pairs unless a demo fraction is given.

Data per task (``benchmarks/uniintervene_offline.py`` wrote it): the 20 scripted demos and the 30
``assisted`` episodes (a weak BC policy with the operator on top: its takeover segments are the
operator anchors). One proxy value (``--value_steps`` updates) embeds the memory for all three;
each recovery policy gets ``--steps`` updates at batch 128. IR = operator steps / all steps
over ``--episodes`` fresh episodes (seeds 50000+); lower is better.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

_TASKS = flags.DEFINE_list("tasks", ["pick-place", "assembly", "peg-insert-side"], "Tasks with offline data.")
_DATA = flags.DEFINE_string("data_root", "benchmarks/results/uniintervene_offline",
                            "Folder with TASK/data/{demos,assisted} (benchmarks/uniintervene_offline.py).")
_STEPS = flags.DEFINE_integer("steps", 3000, "Recovery-policy updates per variant.")
_VALUE_STEPS = flags.DEFINE_integer("value_steps", 1000, "Proxy-value updates (shared by the variants).")
_EPISODES = flags.DEFINE_integer("episodes", 20, "Episodes per variant.")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/recovery_goals", "Output prefix (.md, .json).")

# (name, recovery_goals, recovery_min_gain, recovery_demo_fraction, recovery_anchors)
VARIANTS = (("future", "future", 0.0, None, "interventions"),
            ("retrieved", "retrieved", 0.0, None, "interventions"),
            ("retrieved, gain > 0.25", "retrieved", 0.25, None, "interventions"),
            ("retrieved, gain > 0.25, half demos", "retrieved", 0.25, 0.5, "interventions"),
            ("retrieved, demos only", "retrieved", 0.25, 1.0, "interventions"),
            ("retrieved, gain > 0.25, all steps of successes", "retrieved", 0.25, None, "all"))


def _load(folder, task, source):
    from serl_ext.data.episodes import list_episodes, load_episode

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} not found: run benchmarks/uniintervene_offline.py for {task} first")
    out = []
    for path in list_episodes(folder):
        e = load_episode(path)
        e["metadata"] = dict(e.get("metadata") or {}, task=task, source=source)
        out.append(e)
    return out


def run_task(task):
    from tqdm import tqdm

    from configs.train import get_config
    from drivers import RecoveryDriver, drive
    from serl_ext.loop import common
    from uniintervene_jax.gate import NetworkGateModels
    from uniintervene_jax.message import build_models
    from uniintervene_jax.online import OnlineUniIntervene
    from uniintervene_jax.recovery.dataset import recovery_batch_indices, take_pairs

    config = get_config(f"{task},hil_serl+uniintervene")
    config.seed = _SEED.value
    env = common.make_env(config, 0, with_operator=False)
    spec, action_dim = common.observation_spec(env), int(env.action_space.shape[0])
    env.close()
    root = os.path.join(_DATA.value, task, "data")
    demos = _load(os.path.join(root, "demos"), task, "demo")
    assisted = _load(os.path.join(root, "assisted"), task, "online")
    ui = OnlineUniIntervene(config, spec, action_dim, demos)
    ui.online.extend(assisted)
    ui.pretrain(steps=_VALUE_STEPS.value)  # value (and a recovery policy we do not use) + memory
    rows = []
    for name, goals, gain, demo_fraction, anchors in VARIANTS:
        ui.c.recovery_goals, ui.c.recovery_min_gain, ui.c.recovery_anchors = goals, gain, anchors
        ui._rebuild()
        pairs = ui._recovery_pairs
        _, _, policy = build_models(config, spec, action_dim)
        rng = np.random.default_rng(_SEED.value)
        t0 = time.time()
        for _ in tqdm(range(_STEPS.value), desc=f"{task} {name}", leave=False):
            idx = recovery_batch_indices(pairs["is_demo"], 128, demo_fraction, rng)
            policy, info = policy.update(take_pairs(pairs, idx))
        ui.recovery = policy
        models = NetworkGateModels(config, spec, action_dim)
        payload = ui.payload()
        payload["ready"] = True
        models.load(payload)
        result = drive(config, RecoveryDriver(models, replan_every=8), _EPISODES.value)
        rows.append({"task": task, "variant": name, "pairs": int(len(pairs["actions"])),
                     "demo_pairs": int(pairs["is_demo"].sum()),
                     "retrieved_fraction": float(ui.last_info.get("uniintervene/recovery_goal_retrieved", 0.0))
                     if goals == "retrieved" else 0.0,
                     "final_loss": float(info.get("loss", info.get("train/loss", np.nan))),
                     "train_s": round(time.time() - t0, 1), **result})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv):
    del argv
    rows = []
    for task in _TASKS.value:
        rows.extend(run_task(task))
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    with open(_OUT.value + ".json", "w") as f:
        json.dump(rows, f, indent=2)
    cmd = (f"python benchmarks/recovery_goals.py --tasks={','.join(_TASKS.value)} --steps={_STEPS.value} "
           f"--value_steps={_VALUE_STEPS.value} --episodes={_EPISODES.value} --seed={_SEED.value} --out={_OUT.value}")
    lines = ["# Recovery-policy training goals: hindsight vs retrieved", "", f"Command: `{cmd}`", "",
             "Each variant trains the online recovery policy on the same demos + operator-assisted episodes "
             "and drives every step the simulated operator does not control (open-loop H = 8 chunks toward "
             "the memory goal; module docstring of benchmarks/recovery_goals.py). IR = operator steps / all "
             "steps pooled over the episodes (as in the online runs), lower is better; per-episode mean = "
             "mean of each episode's ratio; autonomous = episodes with no operator step.", "",
             "| task | training goals / data | pairs (demo) | goals retrieved | IR | IR per-episode mean | autonomous | success | operator steps by takeover reason |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["takeover_step_reasons"].items())) or "-"
        lines.append(f"| {r['task']} | {r['variant']} | {r['pairs']} ({r['demo_pairs']}) | {r['retrieved_fraction']:.2f} | "
                     f"{r['ir']:.3f} | {r['ir_episode_mean']:.3f} | {r['autonomous_rate']:.2f} | {r['success_rate']:.2f} | {reasons} |")
    by = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r["ir"])
    lines += ["", "Mean IR over the tasks: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in by.items())]
    with open(_OUT.value + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
