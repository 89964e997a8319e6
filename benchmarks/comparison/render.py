"""The comparison report: ``results.json``, ``results.md``, ``curves.png`` and ``timeline.png``.

:func:`report` reads the finished runs (:mod:`.load`), aggregates them (:mod:`.aggregate`),
draws the figures (``benchmarks/compare_plots.py``) and writes the two result files;
:func:`results_markdown` renders ``results.md`` from the ``results.json`` content alone.
"""

import json
import math
import os
from typing import List, Optional, Sequence

from benchmarks import compare_plots
from benchmarks.comparison.aggregate import (
    PAPER_REFERENCE, TARGET_IR_REDUCTION, TARGET_SEEDS, TARGET_TASKS, aggregate, fairness_issues, mean, median,
    selectivity, settings_used)
from benchmarks.comparison.launch import validate
from benchmarks.comparison.load import add_system_eval, load_runs, load_timelines, read_command
from serl_ext.files import atomic_write

DEFAULT_MACHINE = "2 CPU cores, no GPU"
# Per-run keys that stay out of results.json (curves and settings: the figures and the fairness check).
_NOT_IN_JSON = ("eval_curve", "ir_curve", "fairness")


def _fmt(v, p=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{p}f}" if isinstance(v, float) else str(v)


def _pm(mean_, std, p):
    if mean_ is None:
        return "-"
    return f"{mean_:.{p}f} ± {std:.{p}f}" if std is not None else f"{mean_:.{p}f}"


def _signed(v, p=1, unit=""):
    return "-" if v is None else f"{v:+.{p}f}{unit}"


def _verdict(v):
    return "-" if v is None else ("yes" if v else "no")


def first_uniintervene_method(methods: Sequence[str]) -> Optional[str]:
    """The first method whose name contains ``uniintervene`` (the timeline figure's method), or
    None."""
    return next((m for m in methods if "uniintervene" in m), None)


def write_plots(out: str, runs: Sequence[dict], tasks: Sequence[str], methods: Sequence[str], seeds: Sequence,
                budgets: dict) -> dict:
    """Writes ``OUT/curves.png`` and, when a UniIntervene method has gate timelines,
    ``OUT/timeline.png`` (a stale one is removed otherwise).

    Args:
      runs: ``load.load_runs`` rows (with ``eval_curve`` and ``ir_curve``).
      budgets: {task: env steps}, drawn as a dotted line.
    Returns:
      ``{"method", "episodes", "note"}``: the timeline's method (or None), its episodes
      (``compare_plots.select_timeline_episodes``, k=3) and a note saying why there is no figure
      (None when there is one).
    """
    curves = {t: {m: {"eval": [r["eval_curve"] for r in runs if r["task"] == t and r["method"] == m],
                      "ir": [r["ir_curve"] for r in runs if r["task"] == t and r["method"] == m]}
                  for m in methods} for t in tasks}
    compare_plots.plot_curves(os.path.join(out, "curves.png"), curves, tasks, methods, budgets=budgets)
    ui_method = first_uniintervene_method(methods)
    note, episodes = None, []
    path = os.path.join(out, "timeline.png")
    if ui_method is None:
        note = "no UniIntervene method in --methods: no gate timeline figure."
    else:
        episodes = compare_plots.select_timeline_episodes(load_timelines(out, tasks, ui_method, seeds), k=3)
        if not episodes:
            note = f"no `gate_timeline.jsonl` episodes found for {ui_method}: no gate timeline figure."
        else:
            compare_plots.plot_timeline(path, episodes, method=ui_method)
    if note and os.path.exists(path):
        os.remove(path)  # A stale figure from an earlier report would mislead.
    return {"method": ui_method, "episodes": episodes, "note": note}


def _main_table(result: dict) -> List[str]:
    """The per-task table (and the average row) of ``results.md``."""
    methods, baseline, n_asked = result["methods"], result["baseline"], len(result["seeds"])
    others = [m for m in methods if m != baseline]

    def mark(task, method):
        n = result["per_task"][task][method]["n_seeds"]
        return "" if n >= n_asked else f" [{n}/{n_asked}]"

    header = ["task"]
    for m in methods:
        header += [f"{m} SR", f"{m} IR"]
    for m in others:
        header += [f"{m} IR cut", f"{m} ΔSR (pts)", f"{m} target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in result["tasks"]:
        row = [task]
        for m in methods:
            t = result["per_task"][task][m]
            row += [_pm(t["sr_mean"], t["sr_std"], 2) + mark(task, m), _pm(t["ir_mean"], t["ir_std"], 3) + mark(task, m)]
        for m in others:
            c = result["comparisons"][task][m]
            row += [_signed(c["ir_reduction_pct"], 1, "%"), _signed(c["sr_diff_points"], 1),
                    _verdict(c["target_met"]) + ("" if c["enough_seeds"] or c["target_met"] is None else " (< 3 seeds)")]
        lines.append("| " + " | ".join(row) + " |")
    row = ["**average**"]
    for m in methods:
        a = result["average"][m]
        row += [_fmt(a["sr_mean"], 2), _fmt(a["ir_mean"], 3)]
    for m in others:
        c = result["comparisons"]["average"][m]
        row += [_signed(c["ir_reduction_pct"], 1, "%"), _signed(c["sr_diff_points"], 1), _verdict(c["target_met"])]
    lines += ["| " + " | ".join(row) + " |", ""]
    for m in others:
        t = result["target"][m]
        lines.append(
            f"- **{m}**: target met on {len(t['tasks_met'])} of {t['n_tasks']} tasks "
            f"({len(t['tasks_met_with_seeds'])} with >= {TARGET_SEEDS} seeds per method; "
            f"need {TARGET_TASKS} of 5 with >= {TARGET_SEEDS} seeds): **{'met' if t['met'] else 'not met'}**"
            + (f" (met on: {', '.join(t['tasks_met'])})" if t["tasks_met"] else ""))
    missing = [f"{t}/{m} ({result['per_task'][t][m]['n_seeds']}/{n_asked})" for t in result["tasks"] for m in methods
               if not result["per_task"][t][m]["complete"]]
    if missing:
        lines.append(f"- Fewer seeds than asked: {', '.join(missing)}.")
    lines.append("")
    return lines


def _secondary_table(result: dict) -> List[str]:
    """The secondary metrics per task and method, and the learner / gate speed per method."""
    runs, methods = result["runs"], result["methods"]
    lines = ["Secondary metrics (from `metrics/actor.jsonl`; mean over finished seeds): IR over the "
             "first and the last quarter of the run (`IR first 25%`, `IR last 25%`), the env steps "
             "of the first evaluation with SR >= 0.8 (`steps to SR 0.8`: how fast the base policy "
             "learns; mean over the seeds that got there, `[n/N]` when not all did), and the fraction of training episodes that "
             "succeeded with no human step (`autonomous SR`, whole run / last 25%), and the operator "
             "steps per takeover (human steps / human segments: once in control the operator often "
             "finishes the episode, so each takeover costs tens of steps) against the length of an "
             "autonomous success. `system SR`: the last evaluation with the run's gate on top of the "
             "policy and no human (the whole system acting alone; for a method without a gate, its SR; "
             "from `summary.json` or `system_eval.json` of `benchmarks/system_eval.py`).", "",
             "| task | method | seeds | IR first 25% | IR last 25% | steps to SR 0.8 | autonomous SR | autonomous SR last 25% | train SR (with operator) "
             "| operator steps per takeover | autonomous success length | system SR (policy + gate, no human) "
             "| learner updates/s (median, next to the actor) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in result["tasks"]:
        for m in methods:
            rs = [r for r in runs if r["task"] == task and r["method"] == m]
            if not rs:
                continue

            def mean_of(key):
                return mean([r.get(key) for r in rs])

            reached = [r["steps_to_sr80"] for r in rs if r.get("steps_to_sr80") is not None]
            to_sr80 = (f"{mean(reached):,.0f}" if reached else "never") + (
                f" [{len(reached)}/{len(rs)}]" if len(reached) < len(rs) else "")
            lines.append(f"| {task} | {m} | {len(rs)} | {_fmt(mean_of('ir_first'), 3)} | {_fmt(mean_of('ir_last'), 3)} | "
                         f"{to_sr80} | {_fmt(mean_of('auto_sr'))} | "
                         f"{_fmt(mean_of('auto_sr_last'))} | {_fmt(mean_of('train_sr'))} | "
                         f"{_fmt(mean_of('steps_per_takeover'), 1)} | {_fmt(mean_of('auto_length'), 1)} | "
                         f"{_fmt(mean_of('system_sr'))} | {_fmt(median([r.get('learner_ups') for r in rs]), 0)} |")
    for m in methods:
        ups = [r.get("learner_ups") for r in runs if r["method"] == m]
        p50 = [r["gate"]["gate_latency_ms_p50"] for r in runs if r["method"] == m and r["gate"].get("gate_latency_ms_p50")]
        p99 = [r["gate"]["gate_latency_ms_p99"] for r in runs if r["method"] == m and r["gate"].get("gate_latency_ms_p99")]
        line = f"- {m}: learner updates/s median over all runs {_fmt(median(ups), 0)}"
        if p50:
            line += (f"; gate decision latency per run p50 {min(p50):.2f}-{max(p50):.2f} ms, "
                     f"p99 {min(p99):.1f}-{max(p99):.1f} ms")
        lines.append(line)
    lines.append("")
    return lines


def _source_cell(cell: dict, suffix: str = "") -> str:
    """``policy / recovery / human`` step fractions of a selectivity cell, "-" when unknown."""
    values = [cell.get(f"{k}_frac{suffix}") for k in ("policy", "recovery", "human")]
    return "-" if None in values else " / ".join(f"{v:.2f}" for v in values)


def _selectivity_table(result: dict) -> List[str]:
    """The selectivity table per task and method (``aggregate.selectivity``), from the
    ``selectivity`` entry of ``results.json``; [] when there is none."""
    sel = result.get("selectivity")
    if not sel:
        return []
    windows = sel.get("windows") or []
    n_txt = (f"N = {windows[0]} env steps" if len(windows) == 1 else
             f"N differs between runs: {', '.join(str(w) for w in windows)}" if windows else "N from the runs")
    lines = ["Selectivity (mean over finished seeds; `-`: the run's files lack it, e.g. runs made before these "
             "counters, or a method without a gate). `trigger rate`: the gate's triggers per decision "
             "(`gate_trigger_rate` of `summary.json`; `gate_triggers / gate_decisions` for runs before it). A recovery "
             "onset is the first step of a run of recovery steps, a takeover onset the first step of a run of "
             "operator steps (`serl_ext/loop/sources.py`); `onset precision` = recovery onsets followed by a takeover "
             "onset 1..N env steps later / recovery onsets, `onset recall` = takeover onsets preceded by a recovery "
             f"onset 1..N steps earlier / takeover onsets ({n_txt}; a takeover that aborts a running chunk counts; "
             "plain HiL-SERL has recall 0). `steps by source`: policy / recovery / human fractions of the training "
             "steps (episode rows of `metrics/actor.jsonl`), over the run and over the episodes ending in its last "
             "quarter. `chunks aborted by the human`: the gate's count per run; `recovery runs ended by a human step`: "
             "the same from the sources alone (it also counts a chunk that ran to its end with the human taking over "
             "on the next step). `value gain per chunk`: the gate's mean proxy-value gain over a recovery chunk. "
             "`takeovers noticed during recovery`: the share of the operator's takeovers whose trigger it noticed "
             "while a recovery chunk acted (`takeover_causes` of `summary.json`, by trigger reason and actor).", "",
             "| task | method | seeds | trigger rate per decision | onset precision | onset recall "
             "| steps by source (policy / recovery / human) | steps by source, last 25% "
             "| chunks aborted by the human per run | recovery runs ended by a human step per run "
             "| value gain per chunk | takeovers noticed during recovery |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in result["tasks"]:
        for m in result["methods"]:
            c = sel["per_task"].get(task, {}).get(m)
            if not c:
                continue
            lines.append(f"| {task} | {m} | {c['n_seeds']} | {_fmt(c['trigger_rate'], 3)} | "
                         f"{_fmt(c['onset_precision'])} | {_fmt(c['onset_recall'])} | {_source_cell(c)} | "
                         f"{_source_cell(c, '_last')} | {_fmt(c['aborted_chunks'], 1)} | "
                         f"{_fmt(c['recovery_runs_ended_by_human'], 1)} | {_fmt(c['value_gain'], 3)} | "
                         f"{_fmt(c['takeovers_during_recovery'])} |")
    lines.append("")
    return lines


def _per_run_table(runs: Sequence[dict]) -> List[str]:
    lines = ["Per run:", "",
             "| task | method | seed | final SR | best SR | IR | recovery steps | env steps | wall min | gate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        gate = ", ".join(f"{k}={_fmt(v, 3) if isinstance(v, float) else v}" for k, v in r["gate"].items()) or "-"
        lines.append(
            f"| {r['task']} | {r['method']} | {r['seed']} | {_fmt(r['final_sr'])} | {_fmt(r['best_sr'])} | "
            f"{_fmt(r['ir'], 3)} | {_fmt(r['recovery_steps'])} | {_fmt(r['env_steps'])} | "
            f"{_fmt(r['wall_min'], 1)} | {gate} |")
    if not runs:
        lines.append("| (no finished runs) | | | | | | | | | |")
    return lines


def results_markdown(result: dict) -> str:
    """``results.md`` from the ``results.json`` content (the dict :func:`report` returns).

    Sections: header (commands, machine, budget, seeds, evaluation, cell legend, paper
    reference, notes on settings the runs used); the main table per task and "average"
    (``SR`` and ``IR`` per method as mean ± sample std over seeds, ``[n/N]`` when only n of the N
    asked seeds finished; per non-baseline method ``IR cut`` in %, ``ΔSR`` in points and
    ``target``); the target verdict per method; the fairness check; the secondary metrics and
    speeds; the selectivity table (:func:`_selectivity_table`, when ``selectivity`` is there); the
    per-run table; the figures.
    """
    methods, baseline, n_asked = result["methods"], result["baseline"], len(result["seeds"])
    command, report_command = result["command"], result["report_command"]
    lines = [f"# Method comparison: {', '.join(methods)} (baseline {baseline})", ""]
    lines.append(f"Command: `{command}`")
    if report_command and command != report_command:
        lines.append(f"Report regenerated with: `{report_command}`")
    budget_txt = ", ".join(f"{t} {b:,}" for t, b in result["budget_env_steps"].items())
    lines += [
        "",
        f"Machine: {result['machine']}; each run = learner + actor processes, {result['parallel']} run(s) at a time.",
        f"Budget (identical for every method of a task): env steps per run: {budget_txt} "
        f"(agent steps, action repeat {result['action_repeat']}); {result['num_demos']} scripted demos per task "
        "(`demos/TASK`, shared); the same simulated operator config; extra `--config` flags given to every run.",
        f"Seeds asked: {', '.join(str(int(s)) for s in result['seeds'])} ({n_asked} per task and method).",
        f"Evaluation: {result['eval']['episodes']} deterministic episodes on fresh seeded envs every "
        f"{result['eval']['period_env_steps']:,} env steps, "
        "no operator; SR = the run's last evaluation. IR = human-operator steps / all env steps over the whole run.",
        "Cells: mean ± sample std over seeds; `[n/N]` = only n of the N asked seeds finished. "
        "IR cut = (IR_base - IR) / IR_base; ΔSR = SR - SR_base in points; "
        f"target = IR cut >= {100 * TARGET_IR_REDUCTION:.0f}% and SR >= SR_base. "
        f"Average = mean of the task means over {len(result['average_tasks'])} task(s) with runs of every method.",
        f"Paper reference: {result['paper_reference']}.",
        "",
    ]
    if result["budget_notes"]:
        lines[-1:-1] = [f"Note: {n}." for n in result["budget_notes"]]
    lines += _main_table(result)
    if result["fairness_issues"]:
        lines += ["**Settings that differ between runs of a task (the comparison is not like for like):**", ""]
        lines += [f"- {i}" for i in result["fairness_issues"]] + [""]
    else:
        lines += ["Checked from every run's `actor_config.json`: operator, demos, budget, eval schedule and "
                  "action repeat are identical within each task.", ""]
    lines += _secondary_table(result)
    lines += _selectivity_table(result)
    lines += _per_run_table(result["runs"])
    lines += ["", "![curves](curves.png)", "",
              "Curves: top, evaluation SR against env steps; bottom, cumulative IR (from `metrics/actor.jsonl`); "
              "line = mean over seeds, band = min-max.", ""]
    timeline = result["timeline"]
    if timeline["note"]:
        lines += [f"Gate timeline: {timeline['note']}", ""]
    else:
        eps = "; ".join(f"{e['task']} seed {e['seed']} episode {e.get('episode')}" for e in timeline["episodes"])
        lines += ["![timeline](timeline.png)", "",
                  f"Gate timeline ({timeline['method']}; {eps}): proxy value and sigmoid risk per step with the "
                  "threshold tau, triggers marked, background = who acted (white policy, green recovery, red human). "
                  "Episodes chosen by `compare_plots.select_timeline_episodes`: base-policy steps, then a "
                  "trigger, then recovery, successful ones first, one per task first.", ""]
    return "\n".join(lines)


def report(out: str, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence, baseline: str = "hil_serl",
           max_env_steps: int = 0, eval_period: int = 2500, eval_episodes: int = 10,
           machine: str = DEFAULT_MACHINE, command: Optional[str] = None, parallel: int = 1,
           num_demos: int = 20) -> dict:
    """Aggregates the finished runs under ``out`` and writes ``results.json``, ``results.md``
    (:func:`results_markdown`, also printed), ``curves.png`` and ``timeline.png`` (when a gate
    timeline exists; :func:`write_plots`).

    Args:
      out: the comparison folder (``OUT/runs/TASK/METHOD/seedS``; ``OUT/command.txt``, when
        present, is the command reported as the one that made the runs).
      tasks, methods, seeds, baseline: what to compare (checked by ``launch.validate``).
      max_env_steps, eval_period, eval_episodes: the settings asked; the report gives the ones
        the runs used (``aggregate.settings_used``) and notes any difference.
      machine, command, parallel, num_demos: for the header.
    Returns:
      The ``results.json`` content: the settings, the ``aggregate.aggregate`` keys,
      ``selectivity`` (``aggregate.selectivity``), ``fairness_issues``, ``budget_notes``, ``timeline`` and ``runs`` (the ``load.load_run``
      rows without curves and settings).
    Raises:
      ValueError: invalid names (see ``launch.validate``).
    """
    validate(methods, tasks, baseline)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    runs = load_runs(out, tasks, methods, seeds)
    add_system_eval(runs, os.path.join(out, "system_eval.json"))
    agg = aggregate(runs, tasks, methods, seeds, baseline)
    used = settings_used(runs, tasks, max_env_steps, eval_period, eval_episodes)
    repeats = sorted({r["action_repeat"] for r in runs if r.get("action_repeat") is not None})
    timeline = write_plots(out, runs, tasks, methods, seeds, used["budgets"])
    runs_command = read_command(out)
    result = {
        "command": runs_command or command,
        "report_command": command,
        "machine": machine,
        "parallel": parallel,
        "methods": list(methods),
        "baseline": baseline,
        "tasks": list(tasks),
        "seeds": [int(s) for s in seeds],
        "budget_env_steps": used["budgets"],
        "action_repeat": ", ".join(str(a) for a in repeats) if repeats else "4 (config default; no run read yet)",
        "eval": {"period_env_steps": used["eval_period"], "episodes": used["eval_episodes"]},
        "num_demos": num_demos,
        "paper_reference": PAPER_REFERENCE,
        "target_rule": {"ir_reduction_min": TARGET_IR_REDUCTION, "sr_not_lower": True,
                        "tasks_needed": TARGET_TASKS, "seeds_needed": TARGET_SEEDS},
        **agg,
        "selectivity": selectivity(runs, tasks, methods),
        "fairness_issues": fairness_issues(runs, tasks),
        "budget_notes": used["notes"],
        "timeline": {"method": timeline["method"], "episodes": [
            {k: e.get(k) for k in ("task", "seed", "episode", "env_steps", "success")} for e in timeline["episodes"]],
            "note": timeline["note"]},
        "runs": [{k: v for k, v in r.items() if k not in _NOT_IN_JSON} for r in runs],
    }
    atomic_write(os.path.join(out, "results.json"), json.dumps(result, indent=2).encode())
    text = results_markdown(result)
    atomic_write(os.path.join(out, "results.md"), text.encode())
    print(text)
    return result
