"""HiL-SERL fidelity A/B (issue 11 item 5): the `hil_serl` preset against one upstream value at a
time, on pick-place, 3 seeds, 40k env steps each; resumable.

  nice -n 19 python benchmarks/fidelity.py --commit            # the sweep, then the report
  python benchmarks/fidelity.py --report_only                  # the report from what is on disk
  python benchmarks/fidelity.py --variants=tanh,no_td_clip     # some variants only
  python benchmarks/fidelity.py --dry_run                      # print the commands, run nothing

Each variant is a ``benchmarks/hil_serl.py`` run set in its own folder (``OUT/<folder>``)::

  python benchmarks/hil_serl.py --out=benchmarks/results/fidelity/<folder> --tasks=pick-place \
      --seeds=S --budgets=pick-place:40000 --eval_episodes=20 --eval_period=5000 [--commit] \
      -- <the variant's --config flags>

``--order=seed`` (default) runs seed 0 of every variant, then seed 1, ... (one call per run, so a
sweep cut short leaves every variant with the same seeds), then regenerates each folder's own
``hil_serl.py`` report over all seeds (``--report_only``); ``--order=variant`` makes one call per
variant with ``--seeds=0,1,2``. Runs that hold a ``summary.json`` are skipped by hil_serl.py, so
the command resumes (an interrupted run restarts from scratch). ``preset`` and
``upstream_values`` reuse the folders of the first one-seed A/B (``preset_relu``,
``tanh_ts100``): their seed 0 is not rerun. Those two seed-0 runs evaluated 10 episodes per
point, the new runs 20 (the per-run table shows it).

Variants (:data:`VARIANTS`; each changes one thing against the preset unless said):

========================  ==========================================================  ===========
variant                   --config flags                                              folder
========================  ==========================================================  ===========
preset                    (none)                                                      preset_relu
tanh                      agent.activation=tanh                                       tanh
training_starts_100       learner.training_starts=100                                 training_starts_100
upstream_values           both of the two above                                       tanh_ts100
no_td_clip                agent.critic_target_clip='()' (no clip)                     no_td_clip
terminal_at_time_limit    actor.bootstrap_at_time_limit=False                         terminal_at_time_limit
upstream_update_order     agent.update_order=upstream, agent.idle_adam_steps=True     upstream_update_order
softplus_temperature      agent.temperature_parameterization=softplus                 softplus_temperature
========================  ==========================================================  ===========

Report (``OUT/results.md``, ``results.json``, ``curves.png``): per variant and over its seeds
(median and mean), the evaluation SR at 20k / 30k / 40k env steps (the last evaluation at or
before that step), the env steps and minutes (wall clock of the run) to the first evaluation
with SR >= 0.8 (a run that never gets there counts as never: the median is "-" when more than
half never did), and the intervention rate (operator steps / all steps of the training
episodes) over the whole run and its last quarter (``benchmarks.run_metrics``).

"Differs from preset?": with fewer seeds than 3 against 3 "too few seeds to test"; else per
metric **yes** when the variant's seed values and the preset's do
not overlap (every value of one above every value of the other; "never" counts above any step
count), else **no**. For 3 seeds against 3 that is the exact two-sided Mann-Whitney test at its
smallest attainable level, U = 0 with p = 2 / C(6, 3) = 0.1: it finds only effects large
enough to separate the seeds completely, and a "no" is not evidence of no difference.
"""

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.comparison.aggregate import mean as _mean  # noqa: E402
from benchmarks.comparison.aggregate import median as _median  # noqa: E402
from benchmarks.comparison.launch import run_dir as _run_dir  # noqa: E402
from benchmarks.comparison.load import read_json, read_jsonl  # noqa: E402
from benchmarks.comparison.render import _fmt as fmt  # noqa: E402
from benchmarks.run_metrics import episode_rows, ir_between, steps_to, truncate_history  # noqa: E402
from serl_ext.files import atomic_write  # noqa: E402

TASK, ALGORITHM = "pick-place", "hil_serl"
# A separation is reported only where it can reach this p (3 seeds against 3: 0.1).
MAX_P = 0.1
BUDGET = 40_000  # env steps per run
SR_STEPS = (20_000, 30_000, 40_000)  # env steps at which the eval SR is reported
TARGET_SR = 0.8
DEFAULT_OUT = "benchmarks/results/fidelity"
BASELINE = "preset"

# name -> (folder under OUT, extra --config flags for hil_serl.py, what differs from the preset)
VARIANTS: Dict[str, Any] = {
    "preset": ("preset_relu", [], "the hil_serl preset (relu, training_starts 1000, TD clip [0, 1], "
                                  "bootstrap at the time limit, SAC update order, exp temperature)"),
    "tanh": ("tanh", ["--config.agent.activation=tanh"], "tanh hidden activation (upstream)"),
    "training_starts_100": ("training_starts_100", ["--config.learner.training_starts=100"],
                            "training_starts 100 (upstream)"),
    "upstream_values": ("tanh_ts100", ["--config.agent.activation=tanh", "--config.learner.training_starts=100"],
                        "tanh and training_starts 100 together"),
    "no_td_clip": ("no_td_clip", ["--config.agent.critic_target_clip=()"], "no TD-target clip (upstream)"),
    "terminal_at_time_limit": ("terminal_at_time_limit", ["--config.actor.bootstrap_at_time_limit=False"],
                               "the time limit is terminal, mask 0 (upstream)"),
    "upstream_update_order": ("upstream_update_order",
                              ["--config.agent.update_order=upstream", "--config.agent.idle_adam_steps=True"],
                              "upstream's learner step: critic-only steps, then critic, actor and temperature "
                              "from the same parameters; momentum-only Adam steps of actor and temperature"),
    "softplus_temperature": ("softplus_temperature", ["--config.agent.temperature_parameterization=softplus"],
                             "softplus temperature, entropy at s' (upstream)"),
}
# The metrics the "differs from preset?" column tests: key -> (label, higher is better).
TESTED = {"sr_40k": ("SR 40k", True), "env_steps_to_target": ("steps to 0.8", False),
          "ir": ("IR", False)}


# --------------------------------------------------------------------------- per run


def run_metrics(run: str, budget: int = BUDGET) -> Optional[Dict[str, Any]]:
    """The metrics of one finished run folder (``summary.json`` present), or None.

    Args:
      run: ``OUT/<folder>/runs/TASK/ALGORITHM/seedS``.
      budget: env steps of the run (IR windows: ``(0, budget]`` and ``(0.75 budget, budget]``).
    Returns:
      ``seed``, ``eval_episodes`` (from ``actor_config.json``, else the summary's),
      ``sr_20k`` / ``sr_30k`` / ``sr_40k`` (SR in [0, 1] of the last evaluation at or before
      that many env steps; None when there is none), ``env_steps_to_target`` and
      ``minutes_to_target`` (first evaluation with SR >= 0.8; None when never), ``ir`` and
      ``ir_last_quarter`` (in [0, 1]), ``env_steps`` (of the run), ``eval_history``.
    """
    summary = read_json(os.path.join(run, "summary.json"))
    if summary is None:
        return None
    hist = truncate_history(summary.get("eval_history", []), budget)
    cfg = read_json(os.path.join(run, "actor_config.json")) or {}
    episodes = [e for e in episode_rows(read_jsonl(os.path.join(run, "metrics", "actor.jsonl")))
                if e["step"] <= budget]
    out: Dict[str, Any] = {
        "seed": int(summary.get("seed", -1)),
        "eval_episodes": (cfg.get("actor") or {}).get("eval_episodes", summary.get("eval_episodes")),
        "env_steps": summary.get("env_steps"),
    }
    for step in SR_STEPS:
        at = truncate_history(hist, step)
        out[f"sr_{step // 1000}k"] = float(at[-1]["success_rate"]) if at else None
    out["env_steps_to_target"] = steps_to(hist, "env_steps", TARGET_SR)
    seconds = steps_to(hist, "wall_clock_s", TARGET_SR)
    out["minutes_to_target"] = None if seconds is None else seconds / 60.0
    out["ir"] = ir_between(episodes, 0, budget)
    out["ir_last_quarter"] = ir_between(episodes, 0.75 * budget, budget)
    out["eval_history"] = [{"env_steps": h["env_steps"], "success_rate": h["success_rate"]} for h in hist]
    out["episodes"] = episodes
    return out


def load_variant(out: str, name: str, seeds: Sequence, budget: int = BUDGET) -> List[Dict[str, Any]]:
    """:func:`run_metrics` of every finished seed of variant ``name`` under ``out`` (seed order)."""
    folder = VARIANTS[name][0]
    runs = []
    for seed in seeds:
        m = run_metrics(_run_dir(os.path.join(out, folder), TASK, ALGORITHM, seed), budget)
        if m is not None:
            m["seed"] = int(seed)
            runs.append(m)
    return runs


# --------------------------------------------------------------------------- statistics


def _never_last(values: Sequence[Optional[float]]) -> List[float]:
    """Steps / minutes to the target with "never" (None) as +inf, so that it sorts last."""
    return [math.inf if v is None else float(v) for v in values]


def median_to_target(values: Sequence[Optional[float]]) -> Optional[float]:
    """Median of steps (or minutes) to the target, a run that never got there counting as +inf;
    None when that median is infinite (more than half never did) or there are no values."""
    if not values:
        return None
    m = float(np.median(_never_last(values)))
    return None if math.isinf(m) else m


def separated(a: Sequence[Optional[float]], b: Sequence[Optional[float]], none_is_inf: bool) -> Optional[str]:
    """Whether the values of ``a`` and ``b`` do not overlap: "higher" (min a > max b), "lower"
    (max a < min b) or "overlap"; None when either side has no value.

    ``none_is_inf``: None counts as +inf (steps to a target never reached); otherwise Nones are
    dropped. Ties overlap. With 3 against 3 values a separation is the exact two-sided
    Mann-Whitney U = 0, p = 0.1 (module docstring).
    """
    if none_is_inf:
        a, b = _never_last(a), _never_last(b)
    else:
        a, b = [float(v) for v in a if v is not None], [float(v) for v in b if v is not None]
    if not a or not b:
        return None
    if min(a) > max(b):
        return "higher"
    if max(a) < min(b):
        return "lower"
    return "overlap"


def mann_whitney_min_p(n_a: int, n_b: int) -> Optional[float]:
    """Two-sided exact Mann-Whitney p of a complete separation (U = 0) of ``n_a`` against ``n_b``
    values: ``2 / C(n_a + n_b, n_a)`` (capped at 1); None when a side is empty."""
    if n_a < 1 or n_b < 1:
        return None
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


METRIC_KEYS = ("sr_20k", "sr_30k", "sr_40k", "env_steps_to_target", "minutes_to_target", "ir", "ir_last_quarter")
TO_TARGET = ("env_steps_to_target", "minutes_to_target")


def summarize(runs: Sequence[Dict[str, Any]], baseline_runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One variant's row: per metric ``<key>_median`` and ``<key>_mean`` over its runs (for the
    steps / minutes to the target the median counts "never" as +inf and the mean is over the runs
    that got there; ``reached`` = how many did), ``seeds``, and ``differs`` = per tested metric
    (:data:`TESTED`) :func:`separated` against ``baseline_runs``, plus ``min_p``
    (:func:`mann_whitney_min_p`) and ``n_baseline``. The report states a separation only where
    ``min_p <= MAX_P`` (at least 3 seeds against 3)."""
    row: Dict[str, Any] = {"seeds": [r["seed"] for r in runs], "n": len(runs)}
    for key in METRIC_KEYS:
        values = [r[key] for r in runs]
        if key in TO_TARGET:
            row[f"{key}_median"] = median_to_target(values)
        else:
            row[f"{key}_median"] = _median(values)
        row[f"{key}_mean"] = _mean(values)
    row["reached"] = sum(r["env_steps_to_target"] is not None for r in runs)
    row["differs"] = {key: separated([r[key] for r in runs], [r[key] for r in baseline_runs], key in TO_TARGET)
                      for key in TESTED}
    row["min_p"] = mann_whitney_min_p(len(runs), len(baseline_runs))
    row["n_baseline"] = len(baseline_runs)
    return row


def _differs_cell(row: Dict[str, Any], is_baseline: bool) -> str:
    if is_baseline:
        return "(baseline)"
    if row["min_p"] is None or row["min_p"] > MAX_P + 1e-9:
        return f"too few seeds to test ({row['n']} vs {row['n_baseline']})"
    parts = []
    for key, (label, higher_better) in TESTED.items():
        d = row["differs"][key]
        if d is None:
            parts.append(f"{label}: -")
        elif d == "overlap":
            parts.append(f"{label}: no")
        else:
            better = (d == "higher") == higher_better
            parts.append(f"{label}: **yes**, {d} ({'better' if better else 'worse'})")
    return "; ".join(parts)


# --------------------------------------------------------------------------- report


def build_result(out: str, variants: Sequence[str], seeds: Sequence, budget: int = BUDGET) -> Dict[str, Any]:
    """``results.json``'s content: per variant the :func:`summarize` row and its runs."""
    loaded = {name: load_variant(out, name, seeds, budget) for name in variants}
    base = loaded.get(BASELINE) or load_variant(out, BASELINE, seeds, budget)
    per_variant, per_run = {}, []
    for name in variants:
        row = summarize(loaded[name], base)
        row.update(folder=VARIANTS[name][0], flags=list(VARIANTS[name][1]), what=VARIANTS[name][2])
        per_variant[name] = row
        for r in loaded[name]:
            per_run.append({"variant": name, **{k: v for k, v in r.items() if k not in ("episodes",)}})
    return {
        "task": TASK, "algorithm": ALGORITHM, "budget_env_steps": budget, "target_sr": TARGET_SR,
        "sr_steps": list(SR_STEPS), "baseline": BASELINE, "seeds": [int(s) for s in seeds],
        "test": "non-overlap of the seed values (exact two-sided Mann-Whitney U = 0; p = 0.1 for 3 vs 3)",
        "per_variant": per_variant, "runs": per_run,
    }


def results_markdown(result: Dict[str, Any], command: str) -> str:
    """The report text of :func:`build_result`'s dict."""
    k = [f"{s // 1000}k" for s in result["sr_steps"]]
    lines = [
        f"# HiL-SERL fidelity A/B: {result['task']}, {result['budget_env_steps']} env steps per run", "",
        f"Command: `{command}`", "",
        "Each variant changes the `hil_serl` preset as listed (benchmarks/fidelity.py). Medians and "
        "means over the seeds. SR: deterministic evaluation without the operator (last evaluation "
        f"at or before the step). To SR >= {result['target_sr']}: first evaluation at or above it; a run "
        "that never got there counts as never (median \"-\" when more than half never did; the mean "
        "is over the runs that got there). IR: operator steps / all steps of the training episodes, "
        "whole run and last quarter.", "",
        "Differs from preset? With fewer than 3 seeds against 3: too few seeds to test. Else **yes** when the variant's seed values and the preset's do not overlap "
        "(every value of one above every value of the other), per metric; with 3 seeds against 3 this "
        "is the exact two-sided Mann-Whitney test at its smallest level (U = 0, p = 0.1). It detects "
        "only large effects: \"no\" is not evidence that a difference is absent.", "",
        f"| variant | seeds | SR {k[0]} (median / mean) | SR {k[1]} | SR {k[2]} | env steps to SR >= 0.8 "
        "(median / mean, reached) | minutes to SR >= 0.8 | IR whole run | IR last quarter | "
        "differs from preset? (p of a separation) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["per_variant"].items():
        def mm(key, p=2):
            return f"{fmt(r[key + '_median'], p)} / {fmt(r[key + '_mean'], p)}"

        differs = _differs_cell(r, name == result["baseline"])
        if name != result["baseline"] and r["min_p"] is not None and r["min_p"] <= MAX_P + 1e-9:
            differs += f" (p = {r['min_p']:.2f})"
        lines.append(
            f"| {name} | {r['n']} | {mm('sr_20k')} | {mm('sr_30k')} | {mm('sr_40k')} | "
            f"{mm('env_steps_to_target', 0)} ({r['reached']}/{r['n']}) | {mm('minutes_to_target', 1)} | "
            f"{mm('ir', 3)} | {mm('ir_last_quarter', 3)} | {differs} |")
    lines += ["", "Variants:", ""]
    for name, r in result["per_variant"].items():
        flags = " ".join(f"`{f}`" for f in r["flags"]) or "(no flags)"
        lines.append(f"- `{name}` (folder `{r['folder']}`): {r['what']}; {flags}")
    lines += ["", "Per run:", "",
              "| variant | seed | eval episodes | SR 20k | SR 30k | SR 40k | env steps to 0.8 | "
              "minutes to 0.8 | IR | IR last quarter |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(
            f"| {r['variant']} | {r['seed']} | {fmt(r['eval_episodes'])} | {fmt(r['sr_20k'])} | "
            f"{fmt(r['sr_30k'])} | {fmt(r['sr_40k'])} | {fmt(r['env_steps_to_target'], 0)} | "
            f"{fmt(r['minutes_to_target'], 1)} | {fmt(r['ir'], 3)} | {fmt(r['ir_last_quarter'], 3)} |")
    lines += ["", "![curves](curves.png)", ""]
    return "\n".join(lines)


def write_plot(path: str, out: str, variants: Sequence[str], seeds: Sequence, budget: int = BUDGET) -> None:
    """``curves.png``: per variant the median eval SR over the seeds against env steps (band:
    min to max) and the median IR over the last 5k env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    for name in variants:
        runs = load_variant(out, name, seeds, budget)
        if not runs:
            continue
        per_step: Dict[int, List[float]] = {}
        for r in runs:
            for h in r["eval_history"]:
                per_step.setdefault(int(h["env_steps"]), []).append(float(h["success_rate"]))
        steps = sorted(per_step)
        line, = axes[0].plot(steps, [np.median(per_step[s]) for s in steps], marker=".",
                             label=f"{name} ({len(runs)} seeds)")
        axes[0].fill_between(steps, [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps],
                             color=line.get_color(), alpha=0.12)
        xs = list(range(5000, budget + 1, 1000))
        irs = [_median([ir_between(r["episodes"], x - 5000, x) for r in runs]) for x in xs]
        axes[1].plot(xs, [np.nan if v is None else v for v in irs], color=line.get_color(), label=name)
    axes[0].axhline(TARGET_SR, color="gray", ls="--", lw=0.8)
    axes[0].set(title=f"{TASK}: eval SR, median over seeds (band: min-max)", xlabel="env steps",
                ylim=(-0.05, 1.05))
    axes[1].set(title=f"{TASK}: IR over the last 5k env steps, median over seeds", xlabel="env steps",
                ylim=(-0.02, 1.0))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(out: str, variants: Sequence[str], seeds: Sequence, command: str, budget: int = BUDGET) -> Dict[str, Any]:
    """Writes ``results.json``, ``results.md`` and ``curves.png`` into ``out``; returns the dict."""
    result = build_result(out, variants, seeds, budget)
    result["command"] = command
    atomic_write(os.path.join(out, "results.json"), json.dumps(result, indent=2).encode())
    atomic_write(os.path.join(out, "results.md"), results_markdown(result, command).encode())
    write_plot(os.path.join(out, "curves.png"), out, variants, seeds, budget)
    return result


# --------------------------------------------------------------------------- the sweep


def hil_serl_command(out: str, name: str, seeds: Sequence, commit: bool, report_only: bool = False) -> List[str]:
    """The ``benchmarks/hil_serl.py`` call of variant ``name`` for ``seeds`` (module docstring)."""
    folder, flags, _ = VARIANTS[name]
    cmd = [sys.executable, os.path.join("benchmarks", "hil_serl.py"), f"--out={os.path.join(out, folder)}",
           f"--tasks={TASK}", f"--seeds={','.join(str(s) for s in seeds)}", f"--budgets={TASK}:{BUDGET}",
           "--eval_episodes=20", "--eval_period=5000"]
    if report_only:
        cmd.append("--report_only")
    elif commit:
        cmd.append("--commit")
    return cmd + ["--", *flags] if flags else cmd


def _is_done(out: str, name: str, seed) -> bool:
    return os.path.isfile(os.path.join(_run_dir(os.path.join(out, VARIANTS[name][0]), TASK, ALGORITHM, seed),
                                       "summary.json"))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--variants", default="all", help="comma-separated names of VARIANTS, or all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--order", choices=("seed", "variant"), default="seed",
                   help="seed: seed 0 of every variant first; variant: all seeds of a variant first")
    p.add_argument("--report_only", action="store_true")
    p.add_argument("--dry_run", action="store_true", help="print the hil_serl.py commands, run nothing")
    p.add_argument("--commit", action="store_true", help="git-commit each finished run and the report")
    args = p.parse_args(argv)
    args.variants = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if BASELINE not in args.variants:
        args.variants.insert(0, BASELINE)
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.command = "python benchmarks/fidelity.py " + " ".join(argv)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = os.path.abspath(args.out) if not args.dry_run else args.out
    if not args.report_only:
        if args.order == "seed":
            calls = [(name, [seed]) for seed in args.seeds for name in args.variants]
        else:
            calls = [(name, args.seeds) for name in args.variants]
        for name, seeds in calls:
            if all(_is_done(out, name, s) for s in seeds):
                continue
            cmd = hil_serl_command(out, name, seeds, args.commit)
            print("[fidelity]", " ".join(cmd), flush=True)
            if args.dry_run:
                continue
            subprocess.run(cmd, cwd=REPO, check=False)
            report(out, args.variants, args.seeds, args.command)
            if args.commit:
                _commit(out, f"Fidelity A/B: {name} seed(s) {','.join(map(str, seeds))}")
        if args.order == "seed" and not args.dry_run:  # each folder's own report over all seeds
            for name in [n for n in args.variants if any(_is_done(out, n, s) for s in args.seeds)]:
                subprocess.run(hil_serl_command(out, name, args.seeds, False, report_only=True), cwd=REPO,
                               check=False, stdout=subprocess.DEVNULL)
    if args.dry_run:
        return None
    result = report(out, args.variants, args.seeds, args.command)
    print(results_markdown(result, args.command), flush=True)
    if args.commit:
        _commit(out, "Fidelity A/B: report")
    return result


def _commit(out: str, message: str) -> None:
    from benchmarks.hil_serl import git_commit

    folders = [os.path.join(out, VARIANTS[n][0]) for n in VARIANTS if os.path.isdir(os.path.join(out, VARIANTS[n][0]))]
    files = [os.path.join(out, f) for f in ("results.md", "results.json", "curves.png")
             if os.path.isfile(os.path.join(out, f))]
    git_commit(files + folders, message)


if __name__ == "__main__":
    main()
