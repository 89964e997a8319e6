"""The paper-shaped tables of issue 13 and its done-when checks, from the protocol sweep's outputs.

  python benchmarks/protocol_tables.py [--out=benchmarks/results/uniintervene_protocol]

Reads (whatever exists; missing parts show as "-"):
  ``benchmarks/results/sft/results.json``            SFT success rate per task and seed;
  ``OUT/compare/results.json``                        ``hil_serl`` and ``hil_serl+uniintervene``
                                                      (``benchmarks/compare.py``);
  ``OUT/ablations/results.json``                      the full method and its four ablations;
  ``OUT/offline/TASK[-ABLATION]/metrics.json``        the offline report (Q-loss, trigger F1).
Writes ``OUT/tables.md`` and ``OUT/tables.json``.

Table 1 (the paper's main table): SR and IR per task and on average for SFT (BC on the demos;
no human, so no IR), HiL-SERL and HiL-SERL + UniIntervene (seed means of the final evaluation SR,
policy alone, and the whole-run IR), with UniIntervene's relative IR cut
``(IR_HiL-SERL - IR_UI) / IR_HiL-SERL``, its SR difference in points and its relative SR change.
Table 2 (the ablation table): per ablation task, the offline held-out Q-loss (future head; "-"
without one) and trigger F1 at the stored threshold, and the online SR and IR.

Done-when checks (issue 13), each with the measured value:
  ``ir_cut``             average IR cut >= 50 % (from the average SR / IR over the tasks);
  ``sr_not_lower``       average SR of UniIntervene >= HiL-SERL's;
  ``no_task_sr_drop``    no task more than 5 SR points below HiL-SERL;
  ``trigger_rate``       the trigger fires on at most 30 % of the gate's decisions, averaged
                         over UniIntervene's runs;
  ``base_policy_last_quarter``  the base policy acts on at least half of the steps in the last
                         quarter of every UniIntervene run (``policy_frac_last``);
  ``ablations_worse``    every ablation is worse than the full model on SR or IR on every
                         ablation task (lower SR or higher IR, seed means).
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.uniintervene_protocol import ABLATION_TASKS, ABLATIONS, FULL, TASKS  # noqa: E402

BASE = "hil_serl"
ABLATION_NAMES = {"no_future": "w/o future prediction", "no_value": "w/o value prediction",
                  "no_tvr": "w/o temporal value-risk", "no_memory": "w/o memory goal"}


def _read(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(v: Optional[float], digits: int = 2, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.0f}%" if pct else f"{v:.{digits}f}"


def sft_rates(sft: Optional[dict], tasks: Sequence[str]) -> Dict[str, Optional[float]]:
    """Mean SR over the SFT seeds per task (``benchmarks/sft.py``'s results.json)."""
    per_task = (sft or {}).get("per_task", {})
    return {t: _mean([s.get("success_rate") for s in per_task.get(t, {}).values()]) for t in tasks}


def method_rates(result: Optional[dict], method: str, tasks: Sequence[str]) -> Dict[str, Dict[str, Optional[float]]]:
    """``{task: {"sr": seed mean, "ir": seed mean, "n": seeds}}`` of ``method`` in a
    ``benchmarks/compare.py`` results.json (None where it has no finished run)."""
    per_task = (result or {}).get("per_task", {})
    out = {}
    for t in tasks:
        m = per_task.get(t, {}).get(method) or {}
        n = int(m.get("n_seeds") or 0)
        out[t] = {"sr": m.get("sr_mean") if n else None, "ir": m.get("ir_mean") if n else None, "n": n}
    return out


def _average(rates: Dict[str, Dict[str, Optional[float]]], key: str, tasks: Sequence[str]) -> Optional[float]:
    values = [rates[t][key] for t in tasks]
    return None if any(v is None for v in values) else sum(values) / len(values)


def main_table(sft: Optional[dict], compare: Optional[dict], tasks: Sequence[str] = TASKS) -> Dict[str, Any]:
    """Table 1's numbers (module docstring)."""
    s = sft_rates(sft, tasks)
    base, full = method_rates(compare, BASE, tasks), method_rates(compare, FULL, tasks)
    rows = {"SFT": {t: {"sr": s[t], "ir": None} for t in tasks}, "HiL-SERL": base, "HiL-SERL + UniIntervene": full}
    # the average over the tasks, only where every task has a value
    avg = {name: {"sr": _average(r, "sr", tasks), "ir": _average(r, "ir", tasks)} for name, r in rows.items()}
    cut = {}
    for t in list(tasks) + ["average"]:
        b = avg["HiL-SERL"] if t == "average" else base[t]
        m = avg["HiL-SERL + UniIntervene"] if t == "average" else full[t]
        ir_cut = None if b["ir"] in (None, 0) or m["ir"] is None else (b["ir"] - m["ir"]) / b["ir"]
        sr_diff = None if b["sr"] is None or m["sr"] is None else m["sr"] - b["sr"]
        sr_rel = None if sr_diff is None or not b["sr"] else sr_diff / b["sr"]
        cut[t] = {"ir_cut": ir_cut, "sr_diff": sr_diff, "sr_relative": sr_rel}
    return {"tasks": list(tasks), "rows": rows, "average": avg, "against_hil_serl": cut}


def ablation_table(ablations: Optional[dict], offline: Dict[str, Dict[str, Optional[dict]]],
                   tasks: Sequence[str] = ABLATION_TASKS) -> Dict[str, Any]:
    """Table 2's numbers: ``{method: {task: {q_loss, trigger_f1, sr, ir}}}``; ``offline[method][task]``
    is that folder's metrics.json (or None)."""
    methods = [FULL] + [f"{FULL}-{a}" for a in ABLATIONS]
    table = {}
    for method in methods:
        online = method_rates(ablations, method, tasks)
        table[method] = {}
        for t in tasks:
            metrics = (offline.get(method) or {}).get(t) or {}
            table[method][t] = {"q_loss": metrics.get("q_loss"), "trigger_f1": metrics.get("trigger_f1"),
                                "sr": online[t]["sr"], "ir": online[t]["ir"], "n": online[t]["n"]}
    return table


def done_when(main: Dict[str, Any], compare: Optional[dict], ablation: Dict[str, Any],
              tasks: Sequence[str] = TASKS, ablation_tasks: Sequence[str] = ABLATION_TASKS) -> Dict[str, Any]:
    """The checks of the module docstring: ``{name: {"value": ..., "pass": bool or None}}``
    (None: not measurable yet)."""
    avg = main["against_hil_serl"]["average"]
    checks: Dict[str, Any] = {}

    def check(name, value, ok):
        checks[name] = {"value": value, "pass": None if value is None else bool(ok(value))}

    check("ir_cut", avg["ir_cut"], lambda v: v >= 0.5)
    check("sr_not_lower", avg["sr_diff"], lambda v: v >= 0.0)
    drops = [main["against_hil_serl"][t]["sr_diff"] for t in tasks]
    check("no_task_sr_drop", None if any(d is None for d in drops) else min(drops), lambda v: v >= -0.05)
    runs = [r for r in (compare or {}).get("runs", []) if r.get("method") == FULL]
    rates = [r.get("trigger_rate") for r in runs]
    check("trigger_rate", _mean(rates) if runs and all(x is not None for x in rates) else None, lambda v: v <= 0.3)
    fracs = [r.get("policy_frac_last") for r in runs]
    check("base_policy_last_quarter", min(fracs) if runs and all(x is not None for x in fracs) else None,
          lambda v: v >= 0.5)
    worse: Dict[str, Optional[bool]] = {}
    full = ablation.get(FULL, {})
    for a in ABLATIONS:
        row = ablation.get(f"{FULL}-{a}", {})
        verdicts = []
        for t in ablation_tasks:
            f, r = full.get(t, {}), row.get(t, {})
            if None in (f.get("sr"), f.get("ir"), r.get("sr"), r.get("ir")):
                verdicts.append(None)
            else:
                verdicts.append(r["sr"] < f["sr"] or r["ir"] > f["ir"])
        worse[a] = None if not verdicts or None in verdicts else all(verdicts)
    checks["ablations_worse"] = {"value": worse,
                                 "pass": None if None in worse.values() else all(worse.values())}
    return checks


def markdown(main: Dict[str, Any], ablation: Dict[str, Any], checks: Dict[str, Any], command: str) -> str:
    tasks = main["tasks"]
    lines = ["# HiL-SERL + UniIntervene in the paper's protocol (issue 13)", "", f"Command: `{command}`", "",
             "SR: final evaluation success rate (policy alone, no human), IR: operator steps / all env steps "
             "of the run; means over seeds. SFT: BC on the 20 demos (`benchmarks/results/sft/`).", "",
             "| method | " + " | ".join(f"{t} SR / IR" for t in tasks) + " | average SR / IR |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for name, rates in main["rows"].items():
        cells = [f"{_fmt(rates[t]['sr'])} / {_fmt(rates[t]['ir'], 3)}" for t in tasks]
        a = main["average"][name]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_fmt(a['sr'])} / {_fmt(a['ir'], 3)} |")
    cut = main["against_hil_serl"]
    lines.append("| UniIntervene vs HiL-SERL: IR cut, SR points (relative SR) | " + " | ".join(
        f"{_fmt(cut[t]['ir_cut'], pct=True)}, {_fmt(None if cut[t]['sr_diff'] is None else 100 * cut[t]['sr_diff'], 1)}"
        f" ({_fmt(cut[t]['sr_relative'], pct=True)})" for t in tasks + ["average"]) + " |")
    lines += ["", "The paper (real robot): -57% IR, +8.6% relative SR.", "",
              "## Ablations", "",
              "Q-loss and trigger F1: the offline report on held-out episodes (`offline/TASK[-ABLATION]/metrics.json`); "
              "SR and IR: online, means over seeds.", "",
              "| variant | " + " | ".join(f"{t} Q-loss | {t} trigger F1 | {t} SR | {t} IR" for t in ABLATION_TASKS) + " |",
              "|---|" + "---|" * (4 * len(ABLATION_TASKS))]
    for method, per_task in ablation.items():
        name = "full" if method == FULL else ABLATION_NAMES.get(method.split("-")[-1], method)
        cells = []
        for t in ABLATION_TASKS:
            v = per_task.get(t, {})
            cells += [_fmt(v.get("q_loss"), 4), _fmt(v.get("trigger_f1"), 3), _fmt(v.get("sr")), _fmt(v.get("ir"), 3)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Done-when checks", "", "| check | measured | pass |", "|---|---|---|"]
    for name, c in checks.items():
        value = c["value"]
        shown = (", ".join(f"{k}: {'-' if v is None else ('yes' if v else 'no')}" for k, v in value.items())
                 if isinstance(value, dict) else _fmt(value, 3))
        lines.append(f"| {name} | {shown} | {'-' if c['pass'] is None else ('yes' if c['pass'] else '**no**')} |")
    return "\n".join(lines) + "\n"


def build(out: str, sft_path: str, command: str) -> Dict[str, Any]:
    sft = _read(sft_path)
    compare = _read(os.path.join(out, "compare", "results.json"))
    ablations = _read(os.path.join(out, "ablations", "results.json"))
    offline = {FULL: {t: _read(os.path.join(out, "offline", t, "metrics.json")) for t in ABLATION_TASKS}}
    for a in ABLATIONS:
        offline[f"{FULL}-{a}"] = {t: _read(os.path.join(out, "offline", f"{t}-{a}", "metrics.json"))
                                  for t in ABLATION_TASKS}
    main = main_table(sft, compare)
    ablation = ablation_table(ablations, offline)
    checks = done_when(main, compare, ablation)
    result = {"command": command, "main": main, "ablations": ablation, "checks": checks}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tables.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, "tables.md"), "w") as f:
        f.write(markdown(main, ablation, checks, command))
    return result


def main_cli(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/uniintervene_protocol")
    p.add_argument("--sft", default="benchmarks/results/sft/results.json")
    args = p.parse_args(argv)
    command = "python benchmarks/protocol_tables.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = build(os.path.abspath(args.out), os.path.abspath(args.sft), command.strip())
    print(markdown(result["main"], result["ablations"], result["checks"], command.strip()))


if __name__ == "__main__":
    main_cli()
