"""Does the UniIntervene gate take work off the operator for a fixed policy? (the gate's effect on IR
without the learning dynamics of a run)

  python benchmarks/gate_with_operator.py [--runs=benchmarks/results/uniintervene_protocol/compare/runs]
      [--tasks=pick-place,peg-insert-side] [--seeds=0] [--episodes=40] [--out=...]

For every finished ``hil_serl+uniintervene`` run (``RUNS/TASK/hil_serl+uniintervene/seedS`` with
its learner checkpoint and ``uniintervene/`` models, which stay in the run folder but are not
committed), the run's last agent and its last UniIntervene models and memory are restored
(as ``benchmarks/system_eval.py`` does) and run for ``--episodes`` training-style episodes on
fresh envs **with the simulated operator** (the run's operator config, episode ``i`` on the
evaluation seed ``common.eval_seed(config, i)``), deterministic policy actions, two ways on the
same seeds:

  ``policy + operator``          the base policy alone, the operator takes over as in training;
  ``policy + gate + operator``   a fresh evaluation copy of the run's gate between the policy and
                                 the env (trigger, memory goal, recovery chunks; a human step aborts
                                 a chunk, the gate cools down after a hand-back, as in the actor).

When the same task and seed has a finished ``hil_serl`` run, its last agent runs the first way too
(``hil_serl policy + operator``): the baseline's final policy on the same seeds.

``--base=bc`` instead takes the paper's starting point: the SFT base policy (behaviour cloning on
the task's demos of ``OFFLINE/TASK/data/demos``, recorded again when that gitignored folder is missing,
for each of ``--bc_steps``, training seed 0; few
steps give a weak policy, like the one that recorded the offline data) and the gate built from
the offline pipeline folder ``OFFLINE/TASK`` alone (``uniintervene.init_from``: its proxy value,
intervention model, best-F1 threshold, memory and recovery policy, as an online run starts),
``--offline`` defaulting to the protocol's ``offline/`` beside ``--runs``.

``--from_json=FILE`` rebuilds an earlier run's reports (same name, with the totals table) without
running anything.

``--oracle`` adds a third way, ``policy + trigger, expert recovery + operator``: the same gate
(the same value, trigger and cooldowns, so the same firing rule) with the scripted expert's
closed-loop action (privileged state, no noise) as every recovery step. It bounds what a better
recovery policy could do behind this trigger: the gap from the second way is the recovery
policy's share of the missing IR cut, the gap from the first the trigger's.

Per way: IR (operator steps / all steps), takeovers per episode, SR with the operator and the
share of episodes with no operator step (autonomous), and for the gate the recovery share of the
steps. The gate's effect is the difference between the first two rows: same policy, same
operator, same seeds. Outputs ``{--out}/gate_with_operator.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FULL = "hil_serl+uniintervene"


class ExpertRecoveryModels:
    """The gate's models with the recovery policy replaced by the scripted expert (``--oracle``):
    :meth:`chunk` returns the expert's action for the env's current privileged state, repeated
    H times; with the gate's ``replan_every=1`` every recovery step is the expert's closed-loop
    action. Everything else (value, trigger, memory goal) is the wrapped models'. An upper bound
    on what any recovery policy can do behind this trigger: same firing times, perfect actions.
    """

    def __init__(self, models, horizon: int):
        self._models, self._horizon, self.env = models, int(horizon), None
        self._experts: Dict[str, Any] = {}  # task -> scripted expert, built once

    def __getattr__(self, name):
        return getattr(self._models, name)

    def chunk(self, observation, goal) -> np.ndarray:
        from serl_ext.envs.metaworld_env import get_base_env, get_privileged_state
        from serl_ext.envs.tasks import get_expert

        if self.env is None:
            raise RuntimeError("ExpertRecoveryModels.env is not set (run_with_operator sets it per episode)")
        task = get_base_env(self.env).task_name
        if task not in self._experts:
            self._experts[task] = get_expert(task)
        action = np.asarray(self._experts[task](get_privileged_state(self.env)), np.float32)
        return np.tile(action, (self._horizon, 1))


def oracle_gate(gate, horizon: int):
    """An evaluation copy of ``gate`` whose recovery actions are the scripted expert's, re-decided
    every step (:class:`ExpertRecoveryModels`; ``horizon`` = ``uniintervene.recovery.horizon``)."""
    copy = gate.for_evaluation()
    copy.models = ExpertRecoveryModels(gate.models, horizon)
    copy.replan_every = 1
    return copy


TRACE_LEGEND = ("one character per env step: '.' policy, no trigger decision (history warm-up, "
                "cooldown, no gate); 'p' policy after a decision below tau; 'R' recovery chunk started "
                "(trigger); 'r' recovery; 'H' operator; '*' follows the step that succeeded (the trace "
                "stops there, the episode does not)")


def run_with_operator(agent, config, episodes: int, gate=None, traces: int = 0) -> Dict[str, Any]:
    """``episodes`` episodes on fresh envs with the simulated operator (the actor's action order:
    policy action -> gate -> env, where the operator's ``info["intervene_action"]`` replaces it).

    Returns ``{"ir", "takeovers_per_episode", "success_rate", "autonomous_rate",
    "recovery_share", "steps", "takeover_causes"}`` (rates in [0, 1]; ``recovery_share`` None
    without a gate; ``takeover_causes``: takeovers counted by ``"REASON/ACTOR"`` as the actor
    counts them, :class:`serl_ext.loop.sources.TakeoverCauses`), and
    with ``traces`` > 0 ``"traces"``: the first ``traces`` episodes as strings (``TRACE_LEGEND``;
    a gate needs ``step_info()`` for 'p' / 'R').
    """
    from serl_ext.loop import common
    from serl_ext.loop.gate import HUMAN, POLICY, RECOVERY

    from serl_ext.loop.sources import TakeoverCauses

    steps = human = takeovers = recovery = successes = autonomous = 0
    causes: Dict[str, int] = {}
    traced: List[str] = []
    for i in range(episodes):
        seed = common.eval_seed(config, i)
        env = common.make_env(config, seed, with_operator=True)
        if isinstance(getattr(gate, "models", None), ExpertRecoveryModels):
            gate.models.env = env
        try:
            obs, _ = env.reset(seed=seed)
            if gate is not None:
                gate.reset(obs)
            done, prev_human, ep_human, success = False, False, 0, False
            takeover_causes = TakeoverCauses()
            trace = [] if i < traces else None
            while not done:
                action = np.asarray(agent.eval_actions(obs), dtype=np.float32)
                source, step_info = POLICY, None
                if gate is not None:
                    action, source = gate.select_action(obs, action)
                    step_info = gate.step_info() if trace is not None and hasattr(gate, "step_info") else None
                next_obs, reward, terminated, truncated, info = env.step(action)
                robot_source = source  # the gate's choice, before a human override
                if "intervene_action" in info:
                    action, source = np.asarray(info["intervene_action"], dtype=np.float32), HUMAN
                if trace is not None and not success:
                    trace.append(_trace_char(source, step_info))
                    if info.get("success", False):
                        trace.append("*")
                if gate is not None:
                    gate.observe(obs, action, source, reward, next_obs, info)
                is_human = source == HUMAN
                cause = takeover_causes.step(robot_source, source, info)
                if cause is not None:
                    causes[cause] = causes.get(cause, 0) + 1
                takeovers += int(is_human and not prev_human)
                prev_human = is_human
                ep_human += int(is_human)
                recovery += int(source == RECOVERY)
                steps += 1
                success = success or bool(info.get("success", False))
                obs = next_obs
                done = terminated or truncated
            human += ep_human
            if trace is not None:
                traced.append("".join(trace))
            successes += int(success)
            autonomous += int(success and ep_human == 0)
        finally:
            env.close()
    out = {"ir": human / max(steps, 1), "takeovers_per_episode": takeovers / episodes,
           "success_rate": successes / episodes, "autonomous_rate": autonomous / episodes,
           "recovery_share": (recovery / max(steps, 1)) if gate is not None else None, "steps": steps,
           "takeover_causes": dict(sorted(causes.items()))}
    if traces > 0:
        out["traces"] = traced
    return out


def gate_ways(agent, config, episodes: int, gate, oracle: bool = False, traces: int = 0) -> Dict[str, Any]:
    """The rows' ways for one policy: ``policy`` (with the operator alone), ``policy_gate`` (with
    ``gate``) and with ``oracle`` ``policy_gate_oracle`` (:func:`oracle_gate`), each a
    :func:`run_with_operator` result on the same evaluation seeds."""
    ways = {"policy": run_with_operator(agent, config, episodes, traces=traces),
            "policy_gate": run_with_operator(agent, config, episodes, gate, traces=traces)}
    if oracle:
        horizon = int(config.uniintervene.recovery.horizon)
        ways["policy_gate_oracle"] = run_with_operator(agent, config, episodes, oracle_gate(gate, horizon),
                                                       traces=traces)
    return ways


def _trace_char(source: int, step_info: Optional[Dict[str, Any]]) -> str:
    from serl_ext.loop.gate import HUMAN, RECOVERY

    if source == HUMAN:
        return "H"
    if source == RECOVERY:
        return "R" if step_info is not None and step_info["triggered"] else "r"
    if step_info is not None and not np.isnan(step_info["risk_prob"]):
        return "p"
    return "."


def restore(run_dir: str, with_gate: bool):
    """``(agent, config, gate or None)`` from a finished run folder (last checkpoint; the gate
    loaded with the run's final UniIntervene models and memory, evaluation copy).

    Raises FileNotFoundError when the checkpoint or the UniIntervene models are missing."""
    from serl_ext.loop.checkpoint import load_agent

    agent, info = load_agent(run_dir)
    config = info["config"]
    if not with_gate:
        return agent, config, None
    from benchmarks.system_eval import restore_gate

    gate, _ = restore_gate(config, info["observation_spec"], info["action_dim"], run_dir)
    return agent, config, gate.for_evaluation()


def offline_gate(task: str, offline_dir: str):
    """``(config, gate, demos)``: the ``hil_serl+uniintervene`` config of ``task`` started from the
    offline folder, an evaluation copy of its gate loaded with the offline models and memory
    (marked ready), and the folder's demo episodes (``data/demos``; where that gitignored folder
    is missing, as on a fresh clone, :func:`record_pipeline_demos` records them again).

    Raises FileNotFoundError when the folder has no models."""
    from configs.train import get_config
    from serl_ext.data.episodes import list_episodes, load_episode
    from serl_ext.loop import common
    from uniintervene_jax.gate import make_gate
    from uniintervene_jax.online import OnlineUniIntervene

    if not os.path.isdir(os.path.join(offline_dir, "models", "intervention")):
        raise FileNotFoundError(f"{offline_dir} has no models/intervention (run the offline pipeline first)")
    demo_dir = os.path.join(offline_dir, "data", "demos")
    demos = [load_episode(p) for p in list_episodes(demo_dir)] if os.path.isdir(demo_dir) else []
    if not demos:
        demos = record_pipeline_demos(task, offline_dir)
    config = get_config(f"{task},{FULL}")
    config.uniintervene.init_from = offline_dir
    env = common.make_env(config, 0, with_operator=False)
    spec, action_dim = common.observation_spec(env), int(env.action_space.shape[0])
    env.close()
    ui = OnlineUniIntervene(config, spec, action_dim, [])
    gate = make_gate(config, spec, action_dim, None)
    gate.load_params(dict(ui.payload(), ready=True))
    return config, gate.for_evaluation(), demos


def record_pipeline_demos(task: str, offline_dir: str) -> List[dict]:
    """The offline pipeline's demo episodes of ``task``, recorded again into a temporary folder
    (``uniintervene_jax.offline_data.collect_offline_data`` with no rollouts: the same scripted
    expert and demo seeds as the pipeline's data stage at seed 0, so the same episodes) and
    loaded; as many as ``metrics.json`` says the pipeline recorded (20 without it)."""
    import shutil
    import tempfile

    from configs.train import get_config
    from serl_ext.data.episodes import list_episodes, load_episode
    from uniintervene_jax.offline_data import collect_offline_data

    try:
        with open(os.path.join(offline_dir, "metrics.json")) as f:
            num_demos = int(json.load(f)["data"]["demos"]["episodes"])
    except (OSError, KeyError, TypeError, ValueError):
        num_demos = 20
    print(f"[gate_with_operator] {offline_dir}/data/demos is missing: recording the pipeline's "
          f"{num_demos} demos of {task} again", flush=True)
    tmp = tempfile.mkdtemp(prefix=f"demos_{task}_")
    try:
        collect_offline_data(get_config(f"{task},hil_serl"), tmp, num_demos=num_demos, num_rollouts=0,
                             num_assisted=0, seed=0, progress_bar=False)
        return [load_episode(p) for p in list_episodes(os.path.join(tmp, "demos"))[:num_demos]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bc_rows(tasks, offline_root: str, bc_steps, episodes: int, oracle: bool = False,
            traces: int = 0) -> List[Dict[str, Any]]:
    """``--base=bc``: per task and BC step count, the BC policy with the operator, without and
    with the offline gate, and with ``oracle`` the gate with the expert as its recovery policy
    (module docstring)."""
    from uniintervene_jax.offline_data import train_weak_bc

    rows = []
    for task in tasks:
        offline_dir = os.path.join(offline_root, task)
        if not os.path.isdir(offline_dir):
            continue
        config, gate, demos = offline_gate(task, offline_dir)
        for steps in bc_steps:
            t0 = time.time()
            agent = train_weak_bc(config, demos, int(steps), seed=0)
            row = {"task": task, "seed": 0, "bc_steps": int(steps), "episodes": episodes,
                   **gate_ways(agent, config, episodes, gate, oracle, traces)}
            row["seconds"] = time.time() - t0
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _fmt(v: Optional[float], digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="benchmarks/results/uniintervene_protocol/compare/runs")
    p.add_argument("--tasks", default="pick-place,peg-insert-side,assembly,sweep-into,box-close")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--base", default="run", choices=("run", "bc"),
                   help="run: the runs' last agents; bc: BC policies with the offline gate")
    p.add_argument("--offline", default=None, help="--base=bc: the offline folders (default: RUNS/../../offline)")
    p.add_argument("--bc_steps", default="300,2000", help="--base=bc: BC updates, one policy per entry")
    p.add_argument("--oracle", action="store_true",
                   help="also the gate with the scripted expert as its recovery policy (closed loop)")
    p.add_argument("--traces", type=int, default=0,
                   help="write the first N episodes of every way as step traces ({name}_traces.md)")
    p.add_argument("--from_json", default=None,
                   help="rebuild the reports from an earlier run's .json (no episodes are run)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.from_json:
        return report_from_json(args.from_json, args.out)
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    if args.traces < 0:
        p.error("--traces must be >= 0")
    out = args.out or os.path.dirname(os.path.abspath(args.runs))
    rows: List[Dict[str, Any]] = []
    tasks = [t for t in args.tasks.split(",") if t]
    if args.base == "bc":
        offline = args.offline or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.runs))), "offline")
        rows = bc_rows(tasks, offline, [int(x) for x in args.bc_steps.split(",") if x], args.episodes, args.oracle,
                       args.traces)
    for task in (tasks if args.base == "run" else []):
        for seed in [s for s in args.seeds.split(",") if s]:
            ui_dir = os.path.join(args.runs, task, FULL, f"seed{seed}")
            if not os.path.exists(os.path.join(ui_dir, "summary.json")):
                continue
            t0 = time.time()
            agent, config, gate = restore(ui_dir, with_gate=True)
            row: Dict[str, Any] = {"task": task, "seed": int(seed), "episodes": args.episodes,
                                   **gate_ways(agent, config, args.episodes, gate, args.oracle, args.traces)}
            hs_dir = os.path.join(args.runs, task, "hil_serl", f"seed{seed}")
            if os.path.exists(os.path.join(hs_dir, "summary.json")):
                hs_agent, hs_config, _ = restore(hs_dir, with_gate=False)
                row["hil_serl_policy"] = run_with_operator(hs_agent, hs_config, args.episodes)
            row["seconds"] = time.time() - t0
            print(json.dumps(row), flush=True)
            rows.append(row)
    if not rows:
        raise SystemExit(f"nothing to evaluate: no finished {FULL} run (--base=run) or offline folder (--base=bc) "
                         f"for the tasks and seeds asked under {args.runs}")
    command = "python benchmarks/gate_with_operator.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_reports(rows, command, out, args.base, args.episodes, args.oracle, args.traces)


def report_from_json(path: str, out: Optional[str] = None) -> None:
    """``--from_json``: the reports of an earlier run (its ``.json``: command and rows) rebuilt
    into ``out`` (default: the json's folder). Raises FileNotFoundError / ValueError for a
    missing file or one without ``rows``."""
    with open(path) as f:
        saved = json.load(f)
    rows = saved.get("rows") if isinstance(saved, dict) else None
    if not rows:
        raise ValueError(f"{path} holds no rows (not a gate_with_operator result)")
    base = "bc" if "bc_steps" in rows[0] else "run"
    oracle = any("policy_gate_oracle" in r for r in rows)
    traces = max((len(r[k].get("traces") or []) for r in rows for k in r if isinstance(r[k], dict)), default=0)
    write_reports(rows, str(saved.get("command", "")), out or os.path.dirname(os.path.abspath(path)), base,
                  int(rows[0]["episodes"]), oracle, traces, name=os.path.splitext(os.path.basename(path))[0])


def _causes_cell(causes: Optional[Dict[str, int]]) -> str:
    """``"stall/policy 12, workspace/recovery 3"`` (most first), "-" for a report made before the
    counts existed."""
    if not causes:
        return "-" if causes is None else "none"
    return ", ".join(f"{k} {v}" for k, v in sorted(causes.items(), key=lambda kv: (-kv[1], kv[0])))


def way_totals(rows: List[Dict[str, Any]], key: str) -> Optional[Dict[str, float]]:
    """``{"operator_steps", "mean_ir", "rows"}`` of way ``key`` over the rows that have it:
    operator steps summed (IR x steps of each row), IR averaged over the rows; None if none has it."""
    found = [r[key] for r in rows if key in r]
    if not found:
        return None
    return {"operator_steps": float(sum(m["ir"] * m["steps"] for m in found)),
            "mean_ir": float(np.mean([m["ir"] for m in found])), "rows": len(found)}


def write_reports(rows, command: str, out: str, base: str, episodes: int, oracle: bool, traces: int,
                  name: Optional[str] = None) -> None:
    """Writes ``{out}/{name}.json`` and ``.md`` (and ``{name}_traces.md`` with ``traces``),
    ``name`` defaulting to ``gate_with_operator[_bc][_oracle]``; prints the table."""
    if base == "bc":
        ways = [("policy", "BC policy + operator"), ("policy_gate", "same policy + offline gate + operator"),
                ("policy_gate_oracle", "same policy + offline trigger, expert recovery + operator")]
    else:
        ways = [("policy", "UniIntervene run's policy + operator"), ("policy_gate", "same policy + gate + operator"),
                ("policy_gate_oracle", "same policy + trigger, expert recovery + operator"),
                ("hil_serl_policy", "hil_serl run's policy + operator")]
    lines = ["# The gate's effect on the operator's work for a fixed policy", "", f"Command: `{command}`", "",
             f"Each run's last agent (and for the gate its last UniIntervene models and memory), {episodes} "
             "episodes on the evaluation seeds with the run's simulated operator, deterministic policy actions "
             "(`benchmarks/gate_with_operator.py` docstring). IR = operator steps / all steps; autonomous = "
             "successful episodes with no operator step.", "",
             "| task | seed | way | IR | takeovers / episode | SR with operator | autonomous | recovery share "
             "| takeovers by cause (operator's trigger / who acted when it noticed) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    if base == "bc":
        lines[4] = (f"BC on the offline folder's demos (training seed 0, `--bc_steps` updates; the seed column "
                    f"gives them) with the offline folder's gate, {episodes} episodes on the evaluation seeds "
                    "with the default simulated operator, deterministic actions. IR = operator steps / all steps; "
                    "autonomous = successful episodes with no operator step.")
        lines[6] = lines[6].replace("| seed |", "| BC steps |")
    for r in rows:
        for key, way in ways:
            if key not in r:
                continue
            m = r[key]
            lines.append(f"| {r['task']} | {r.get('bc_steps', r['seed'])} | {way} | {_fmt(m['ir'])} | {_fmt(m['takeovers_per_episode'], 2)} | "
                         f"{_fmt(m['success_rate'], 2)} | {_fmt(m['autonomous_rate'], 2)} | {_fmt(m['recovery_share'], 2)} | "
                         f"{_causes_cell(m.get('takeover_causes'))} |")
    totals = [(way, way_totals(rows, key)) for key, way in ways]
    totals = [(way, t) for way, t in totals if t is not None]
    if len(totals) > 1:
        ref = totals[0][1]
        lines += ["", f"Totals over the {ref['rows']} rows (operator steps summed, IR averaged; change against "
                  f"the first way):", "", "| way | operator steps | mean IR |", "|---|---:|---:|"]
        for way, t in totals:
            change = "" if t is ref else (f" ({t['operator_steps'] / ref['operator_steps'] - 1:+.0%})"
                                          if ref["operator_steps"] else "")
            ir_change = "" if t is ref else (f" ({t['mean_ir'] / ref['mean_ir'] - 1:+.0%})" if ref["mean_ir"] else "")
            lines.append(f"| {way} | {t['operator_steps']:,.0f}{change} | {t['mean_ir']:.3f}{ir_change} |")
    os.makedirs(out, exist_ok=True)
    name = name or "gate_with_operator" + ("_bc" if base == "bc" else "") + ("_oracle" if oracle else "")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump({"command": command, "rows": rows}, f, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if traces:
        legend = TRACE_LEGEND[0].upper() + TRACE_LEGEND[1:]
        trace_lines = [f"# Step traces: {name}", "", f"Command: `{command}`", "",
                       f"{legend}. The first {traces} episodes (evaluation seeds) of each way.", ""]
        for r in rows:
            for key, way in ways:
                if key in r and r[key].get("traces"):
                    trace_lines += [f"## {r['task']}, {r.get('bc_steps', r['seed'])}: {way}", "", "```"]
                    trace_lines += [f"{i:2d} {t}" for i, t in enumerate(r[key]["traces"])] + ["```", ""]
        with open(os.path.join(out, f"{name}_traces.md"), "w") as f:
            f.write("\n".join(trace_lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
