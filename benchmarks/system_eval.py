"""Success of the whole UniIntervene system (base policy + gate, no human) at the end of runs.

  python benchmarks/system_eval.py --runs=benchmarks/results/compare/runs \
      [--methods=hil_serl+uniintervene,hil_serl+uniintervene-replan1] [--episodes=10] \
      [--out=benchmarks/results/compare/system_eval]

The comparison's SR (``summary.json`` ``eval_success_rate``) is the base policy alone: the SAC
actor's deterministic action on ``eval_episodes`` fresh seeded envs, no operator, no gate. For a
UniIntervene run that is not what acts during training: there the gate fires and its recovery
policy executes most steps. This script restores, for every finished run of the given methods,
the learner's last agent checkpoint (``checkpoints/``) and the UniIntervene models and memory
(``uniintervene/``; both are kept in the run folders but not committed) and evaluates on the
same eval seeds (``common.eval_seed``):

  policy SR   the base policy alone (as the comparison's SR, from the final learner checkpoint,
              which can be newer than the parameters of the actor's last evaluation);
  system SR   base policy + a fresh copy of the run's gate (``UniInterveneGate.for_evaluation``),
              no human: what the robot would do on its own;
  recovery    the share of the system's steps the recovery policy acted.

Runs started after the actor learned to do this itself (``uniintervene.eval_with_gate``) also
carry ``eval_system_success_rate`` in ``summary.json``. Outputs ``OUT.json`` (per run) and
``OUT.md`` (per task and method: mean over seeds). Run folders without checkpoints or models are
listed as skipped.
"""

import json
import os
import sys
import time
from typing import Any, Dict, List

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)



def config_from_run(run_dir: str):
    """The run's config: ``get_config("TASK,ALGORITHM")`` with the scalar settings of its
    ``actor_config.json`` laid over it (seed, env, agent and uniintervene sections).

    Raises FileNotFoundError when the run has no ``actor_config.json``.
    """
    from configs.train import get_config

    path = os.path.join(run_dir, "actor_config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: not a finished run folder")
    with open(path) as f:
        saved = json.load(f)
    config = get_config(f"{saved['task']},{saved['algorithm']}")

    def overlay(target, source):
        for key, value in source.items():
            if key not in target:
                continue
            if isinstance(value, dict):
                overlay(target[key], value)
            elif value is not None:
                target[key] = tuple(value) if isinstance(value, list) else value

    with config.unlocked():
        config.seed = int(saved["seed"])
        for section in ("env", "agent", "uniintervene"):
            # Runs from before the plug-in refactor saved a uniintervene section for every
            # algorithm; plain algorithms no longer have one.
            if section in saved and section in config:
                overlay(config[section], saved[section])
    return config


def restore_gate(config, spec, action_dim: int, run_dir: str):
    """``(gate, trainer)``: the run's gate (``uniintervene_jax.gate.make_gate``) loaded with the
    final UniIntervene models and memory of ``run_dir/uniintervene`` (marked ready, whatever the
    run's last flag was), and the :class:`~uniintervene_jax.online.OnlineUniIntervene` they were
    restored into. The gate is the training one: take ``gate.for_evaluation()`` for episodes.

    Raises FileNotFoundError when the run folder has no saved UniIntervene models."""
    from uniintervene_jax.gate import make_gate
    from uniintervene_jax.online import OnlineUniIntervene

    ui = OnlineUniIntervene(config, spec, action_dim, [])
    if not ui.restore(os.path.join(run_dir, "uniintervene")):
        raise FileNotFoundError(f"no UniIntervene models in {run_dir}/uniintervene")
    gate = make_gate(config, spec, action_dim, None)
    gate.load_params(dict(ui.payload(), ready=True))
    return gate, ui


def evaluate_run(run_dir: str, episodes: int) -> Dict[str, Any]:
    """Policy-alone and system evaluation of one finished run (module docstring).

    Returns a dict with ``task``, ``algorithm``, ``seed``, ``learner_step`` of the checkpoint,
    ``policy_success_rate`` and ``system_success_rate`` (in [0, 1]), ``system_recovery_fraction``
    (recovery steps / all steps), ``system_length`` (mean agent steps per episode), ``memory_size``
    and ``eval_s`` (seconds).

    Raises:
      FileNotFoundError: no ``actor_config.json``, no checkpoint, or no saved UniIntervene models.
    """
    from serl_ext.loop import common
    from serl_ext.loop.checkpoint import Checkpointer, load_agent
    from serl_ext.loop.evaluation import evaluate

    try:  # a self-describing checkpoint: config, spaces and agent from the run folder alone
        agent, info = load_agent(run_dir)
        config, spec, action_dim = info["config"], info["observation_spec"], info["action_dim"]
        counters = {"learner_step": info["learner_step"]}
    except FileNotFoundError as e:
        if "no policy_spec" not in str(e):
            raise
        # Runs from before checkpoints carried their config: rebuild it from actor_config.json.
        config = config_from_run(run_dir)
        env = common.make_env(config, 0, with_operator=False)
        spec, action_dim = common.observation_spec(env), int(env.action_space.shape[0])
        env.close()
        checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
        try:
            agent, _, counters = checkpointer.restore(common.create_agent(config, spec, action_dim))
        finally:
            checkpointer.close()
    gate, ui = restore_gate(config, spec, action_dim, run_dir)
    t0 = time.time()
    alone = evaluate(agent, config, episodes)
    system = evaluate(agent, config, episodes, gate=gate.for_evaluation(), prefix="eval_system")
    return {
        "task": config.task, "algorithm": config.algorithm, "seed": int(config.seed),
        "learner_step": int(counters.get("learner_step", -1)), "episodes": int(episodes),
        "policy_success_rate": alone["eval/success_rate"],
        "system_success_rate": system["eval_system/success_rate"],
        "system_recovery_fraction": system["eval_system/recovery_fraction"],
        "system_length": system["eval_system/length"],
        "memory_size": int(len(ui.memory_items)) if ui.memory_items is not None else 0,
        "eval_s": time.time() - t0,
    }


def _fmt(xs: List[float]) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{np.mean(xs):.2f}" + (f" ± {np.std(xs, ddof=1):.2f}" if len(xs) > 1 else "")


def write_report(rows: List[Dict[str, Any]], skipped: List[str], out: str, command: str) -> str:
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["algorithm"]), []).append(r)
    lines = [
        "# Whole-system success: base policy + UniIntervene gate, no human",
        "",
        f"Command: `{command}`",
        "",
        "Per run: the learner's last checkpoint and the final UniIntervene models and memory, "
        f"{rows[0]['episodes'] if rows else '-'} deterministic episodes on the evaluation seeds "
        "(fresh envs, no operator). `policy SR`: the SAC actor alone (what the comparison's SR "
        "measures); `system SR`: the actor with a copy of the run's gate (trigger, memory goal, "
        "recovery chunks); `recovery share`: steps the recovery policy acted / all steps. "
        "`actor's last eval SR`: the comparison's SR for the same runs (`summary.json`). "
        "Cells: mean ± sample std over seeds.",
        "",
        "| task | method | seeds | policy SR | system SR | recovery share | actor's last eval SR |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, method), rs in sorted(groups.items()):
        lines.append(f"| {task} | {method} | {len(rs)} | {_fmt([r['policy_success_rate'] for r in rs])} | "
                     f"{_fmt([r['system_success_rate'] for r in rs])} | "
                     f"{_fmt([r['system_recovery_fraction'] for r in rs])} | "
                     f"{_fmt([r.get('summary_eval_success_rate') for r in rs])} |")
    by_method: Dict[str, List[float]] = {}
    for (task, method), rs in groups.items():
        by_method.setdefault(method, []).append(float(np.mean([r["system_success_rate"] for r in rs])))
    lines.append("")
    for method, srs in sorted(by_method.items()):
        lines.append(f"- {method}: system SR averaged over {len(srs)} task(s): {np.mean(srs):.2f}")
    if skipped:
        lines += ["", "Skipped (no checkpoint or models): " + ", ".join(skipped)]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".md", "w") as f:
        f.write(text)
    with open(out + ".json", "w") as f:
        json.dump({"command": command, "runs": rows, "skipped": skipped}, f, indent=1)
    return text


def main(argv):
    del argv
    from tqdm import tqdm

    from run_folders import seed_run_dirs

    root = _RUNS.value
    run_dirs = [d for dirs in seed_run_dirs(root, _METHODS.value).values() for d in dirs]
    rows, skipped = [], []
    for rdir in tqdm(run_dirs, desc="runs"):
        name = os.path.relpath(rdir, root)
        summary_path = os.path.join(rdir, "summary.json")
        if not (os.path.isfile(summary_path) and os.path.isdir(os.path.join(rdir, "checkpoints"))
                and os.path.isdir(os.path.join(rdir, "uniintervene"))):
            skipped.append(name)
            continue
        row = evaluate_run(rdir, _EPISODES.value)
        with open(summary_path) as f:
            row["summary_eval_success_rate"] = json.load(f).get("eval_success_rate")
        row["run"] = name
        rows.append(row)
        tqdm.write(f"{name}: policy SR {row['policy_success_rate']:.2f}, system SR {row['system_success_rate']:.2f} "
                   f"(recovery {row['system_recovery_fraction']:.2f} of steps)")
    command = "python benchmarks/system_eval.py " + " ".join(
        [f"--runs={root}", f"--methods={','.join(_METHODS.value)}", f"--episodes={_EPISODES.value}",
         f"--out={_OUT.value}"])
    print(write_report(rows, skipped, _OUT.value, command))


def _define_flags():
    """Flags are defined only when run as a script, so tests can import the helpers next to
    the other benchmark modules (which define flags of the same names)."""
    global _RUNS, _METHODS, _EPISODES, _OUT
    _RUNS = flags.DEFINE_string("runs", "benchmarks/results/compare/runs", "Folder with TASK/METHOD/seedS run folders.")
    _METHODS = flags.DEFINE_list("methods", ["hil_serl+uniintervene", "hil_serl+uniintervene-replan1"],
                                 "Methods (algorithm names) to evaluate; each needs the gate.")
    _EPISODES = flags.DEFINE_integer("episodes", 10, "Evaluation episodes per run (eval seeds 0..n-1).")
    _OUT = flags.DEFINE_string("out", "benchmarks/results/compare/system_eval", "Output prefix (.json, .md).")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
