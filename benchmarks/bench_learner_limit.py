"""Learner step against the compute limit (issue 14 item 1).

One learner step is ``SACAgent.update(batch, utd_ratio=2)``: 2 critic steps + 1 actor step +
1 temperature step, batch 256 per minibatch, MLP (256, 256) with LayerNorm, state
observation 39-D, action 4-D (the setting of ``bench_agent_update.py``, whose batch helper
this reuses). For each critic ensemble size it measures, in ONE process and alternating
between them so that changing load hits every variant alike:

* ``current``: ``agent.fused_update=False`` (the default: the critic steps in a rolled
  ``lax.scan``);
* ``optimised``: ``agent.fused_update=True`` (the critic steps unrolled);
* ``optimised_donated``: the same with ``update(..., donate=True)``;
* the float32 matmul throughput probe: the GEMM shapes the networks run (square 256^3 of the
  actor, the ensemble's first layer ``(256, 43) x (43, 256 E)`` as XLA merges it, the
  ensemble's second layer ``E x (256, 256) x (256, 256)`` forward and its weight gradient).

The limit of a variant is ``FLOPs / throughput``: FLOPs from XLA's cost analysis of the
compiled update (``jax.jit(...).lower(...).compile().cost_analysis()["flops"]``) and the
throughput the best probe shape reaches (its median over the repeats, GFLOP/s). XLA counts
the body of a rolled loop once, so the rolled scan of ``current`` reports fewer FLOPs than it
runs; every limit therefore uses the FLOPs of the unrolled program (the same computation),
cross-checked against ``utd * critic step + actor/temperature step`` compiled separately.
``ratio = median ms per update / limit ms``. Each timed sample is ``--inner`` consecutive
updates of a chained agent (the new agent feeds the next call; the batch rotates over 4
pre-generated device batches, so host-to-device transfer is excluded) closed by
``block_until_ready``, divided by ``--inner``; a probe sample is as many consecutive GEMMs as
hold the FLOPs of ``--inner`` updates (so both last about as long). The order of the items
rotates every repeat.

    PYTHONPATH=. python benchmarks/bench_learner_limit.py --note "quiet machine"

writes ``benchmarks/results/learner_limit.json`` and ``.md`` (``--out`` moves both).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_agent_update import ACT_DIM, BATCH, OBS_DIM, make_batch  # noqa: E402

from serl_ext.agents import sac  # noqa: E402

HIDDEN = 256
VARIANTS = ("current", "optimised", "optimised_donated")


def make_agent(num_qs: int, num_min_qs: Optional[int], fused: bool) -> sac.SACAgent:
    """Agent of the benchmark setting (seed 0), ``fused_update=fused``."""
    c = sac.get_default_config()
    c.hidden_dims = (HIDDEN, HIDDEN)
    c.num_qs = num_qs
    c.num_min_qs = num_min_qs
    c.critic_target_clip = (0.0, 1.0)
    c.fused_update = fused
    return sac.SACAgent.create(
        jax.random.PRNGKey(0), {"state": np.zeros(OBS_DIM, np.float32)}, np.zeros(ACT_DIM, np.float32), c
    )


def xla_flops(fn: Callable, *args, **static) -> float:
    """FLOPs of ``jax.jit(fn)`` on ``args`` from XLA's cost analysis of the compiled program.

    ``static``: keyword arguments passed as static (e.g. ``utd_ratio``). Returns float FLOPs
    (0.0 when the backend reports none)."""
    compiled = jax.jit(fn, static_argnames=tuple(static)).lower(*args, **static).compile()
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", 0.0))


def probe_shapes(num_qs: int) -> Dict[str, Any]:
    """GEMMs of the update for ensemble ``num_qs``: name -> (einsum, lhs shape, rhs shape)."""
    d_in = OBS_DIM + ACT_DIM
    e = num_qs
    return {
        "square_256x256x256": ("ik,kj->ij", (BATCH, HIDDEN), (HIDDEN, HIDDEN)),
        f"critic_l0_256x{d_in}x{HIDDEN * e}": ("ik,kj->ij", (BATCH, d_in), (d_in, HIDDEN * e)),
        f"critic_l1_{e}x256x256x256": ("eik,ekj->eij", (e, BATCH, HIDDEN), (e, HIDDEN, HIDDEN)),
        f"critic_l1_dW_{e}x256x256x256": ("ebi,ebo->eio", (e, BATCH, HIDDEN), (e, BATCH, HIDDEN)),
    }


def gemm_flops(spec: str, lhs: tuple, rhs: tuple) -> float:
    """2 * multiply-adds of ``jnp.einsum(spec, lhs, rhs)``."""
    ins, out = spec.split("->")
    a, b = ins.split(",")
    sizes = dict(zip(a, lhs))
    sizes.update(zip(b, rhs))
    return 2.0 * float(np.prod([sizes[c] for c in set(a + b)]))


class Probe:
    """One jitted float32 GEMM of the throughput probe."""

    def __init__(self, spec: str, lhs: tuple, rhs: tuple, seed: int):
        r = np.random.default_rng(seed)
        self.x = jnp.asarray(r.normal(size=lhs).astype(np.float32))
        self.y = jnp.asarray(r.normal(size=rhs).astype(np.float32))
        self.fn = jax.jit(lambda x, y: jnp.einsum(spec, x, y))
        self.flops = gemm_flops(spec, lhs, rhs)
        self.fn(self.x, self.y).block_until_ready()

    def sample(self, inner: int) -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            out = self.fn(self.x, self.y)
        out.block_until_ready()
        return (time.perf_counter() - t0) / inner


class Runner:
    """A chained agent of one variant and its rotating batches."""

    def __init__(self, agent: sac.SACAgent, batches: List[Any], utd: int, donate: bool):
        self.agent, self.batches, self.utd, self.donate, self.calls = agent, batches, utd, donate, 0

    def step(self):
        self.agent, info = self.agent.update(self.batches[self.calls % len(self.batches)],
                                             utd_ratio=self.utd, donate=self.donate)
        self.calls += 1
        return info

    def sample(self, inner: int) -> float:
        t0 = time.perf_counter()
        for _ in range(inner):
            info = self.step()
        jax.block_until_ready((self.agent, info))
        return (time.perf_counter() - t0) / inner


def _stats_ms(samples: List[float]) -> Dict[str, float]:
    a = 1e3 * np.asarray(samples)
    return {
        "median_ms": round(float(np.median(a)), 3),
        "p25_ms": round(float(np.percentile(a, 25)), 3),
        "p75_ms": round(float(np.percentile(a, 75)), 3),
        "min_ms": round(float(a.min()), 3),
    }


def bench_ensemble(num_qs: int, num_min_qs: Optional[int], utd: int, repeats: int, inner: int) -> Dict[str, Any]:
    """Alternating measurement of the variants and the probe for one ensemble size."""
    batches = [make_batch(utd * BATCH, s) for s in range(4)]
    agents = {
        "current": make_agent(num_qs, num_min_qs, fused=False),
        "optimised": make_agent(num_qs, num_min_qs, fused=True),
        "optimised_donated": make_agent(num_qs, num_min_qs, fused=True),
    }
    checked = agents["current"]._check_batch(batches[0], utd)

    # FLOPs (XLA cost analysis); the parts cross-check the unrolled program's count.
    flops = {name: xla_flops(sac._update_impl, agents[name], checked, utd_ratio=utd)
             for name in ("current", "optimised")}
    one = jax.tree_util.tree_map(lambda x: x[:BATCH], checked)
    f_critic = xla_flops(lambda a, b: a._critic_step(b), agents["current"], one)
    f_actor = xla_flops(lambda a, b: a._actor_temp_step(b), agents["current"], one)
    flops_parts = utd * f_critic + f_actor
    flops_step = flops["optimised"] if sac._scan_unroll(agents["optimised"].config, utd) == utd else flops_parts

    # Same agents, same batch: the first updates of current and optimised agree.
    a_cur, i_cur = agents["current"].update(batches[0], utd_ratio=utd)
    a_opt, i_opt = agents["optimised"].update(batches[0], utd_ratio=utd)
    max_abs_diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in
                       zip(jax.tree_util.tree_leaves((a_cur, i_cur)), jax.tree_util.tree_leaves((a_opt, i_opt))))

    runners = {name: Runner(agents[name], batches, utd, donate=(name == "optimised_donated")) for name in VARIANTS}
    probes = {name: Probe(spec, lhs, rhs, seed=i) for i, (name, (spec, lhs, rhs)) in
              enumerate(probe_shapes(num_qs).items())}
    compile_s = {}
    for name, r in runners.items():  # compile + warm up
        t0 = time.perf_counter()
        jax.block_until_ready(r.step())
        compile_s[name] = round(time.perf_counter() - t0, 2)
        for _ in range(3):
            jax.block_until_ready(r.step())

    # A probe sample runs as many GEMMs as hold the FLOPs of `inner` updates, so that a probe
    # sample lasts about as long as an update sample and passing load hits both alike.
    probe_inner = {name: max(1, int(round(inner * flops_step / p.flops))) for name, p in probes.items()}
    items = [("u", n) for n in VARIANTS] + [("p", n) for n in probes]
    samples: Dict[str, List[float]] = {n: [] for _, n in items}
    for rep in range(repeats):
        k = rep % len(items)
        for kind, name in items[k:] + items[:k]:  # rotate the order every repeat
            s = runners[name].sample(inner) if kind == "u" else probes[name].sample(probe_inner[name])
            samples[name].append(s)

    probe_out = {}
    for name, p in probes.items():
        med = float(np.median(samples[name]))
        probe_out[name] = {"flops": p.flops, "gemms_per_sample": probe_inner[name], "median_gflops": round(p.flops / med / 1e9, 1),
                           "best_gflops": round(p.flops / min(samples[name]) / 1e9, 1)}
    best_probe = max(probe_out, key=lambda n: probe_out[n]["median_gflops"])
    throughput = probe_out[best_probe]["median_gflops"] * 1e9
    limit_ms = flops_step / throughput * 1e3
    variants = {}
    for name in VARIANTS:
        st = _stats_ms(samples[name])
        st["ratio"] = round(st["median_ms"] / limit_ms, 2)
        st["compile_and_first_call_s"] = compile_s[name]
        variants[name] = st
    return {
        "num_qs": num_qs,
        "num_min_qs": num_min_qs,
        "utd_ratio": utd,
        "batch_per_minibatch": BATCH,
        "flops_xla": {"current_rolled_scan": flops["current"], "optimised": flops["optimised"],
                      "critic_step": f_critic, "actor_temperature_step": f_actor, "parts_sum": flops_parts},
        "flops_step": flops_step,
        "matmul_probe": probe_out,
        "throughput_gflops": round(throughput / 1e9, 1),
        "throughput_probe": best_probe,
        "limit_ms": round(limit_ms, 3),
        "variants": variants,
        "first_update_max_abs_diff_current_vs_optimised": max_abs_diff,
    }


def write_markdown(path: str, report: Dict[str, Any]) -> None:
    lines = [
        "# Learner step against the compute limit (issue 14 item 1)",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Measured {report['date']} on {report['cpu_count']} CPU cores ({report['machine']}), "
        f"jax {report['jax']}, backend {report['backend']}; load average "
        f"{report['loadavg_start']} at the start, {report['loadavg_end']} at the end. "
        f"Note: {report['note'] or '-'}",
        "",
        f"{report['repeats']} alternating repeats of {report['inner']} chained updates "
        "(`benchmarks/bench_learner_limit.py` docstring). Limit = FLOPs of the unrolled step "
        "(XLA cost analysis) / median throughput of the best probe GEMM, timed in the same loop; "
        "ratio = median ms / limit ms (target <= 2.5).",
        "",
        "| ensemble | variant | median ms | p25-p75 ms | limit ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        ens = f"{r['num_qs']} (min over {r['num_min_qs'] or r['num_qs']})"
        for name, v in r["variants"].items():
            lines.append(f"| {ens} | {name} | {v['median_ms']:.2f} | {v['p25_ms']:.2f}-{v['p75_ms']:.2f} "
                         f"| {r['limit_ms']:.2f} | {v['ratio']:.2f} |")
    lines += ["", "| ensemble | MFLOP step (unrolled) | MFLOP rolled scan (as XLA counts it) | MFLOP parts sum "
              "| probe | GFLOP/s (median) | first-update max abs diff |", "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        f = r["flops_xla"]
        lines.append(f"| {r['num_qs']} | {r['flops_step'] / 1e6:.0f} | {f['current_rolled_scan'] / 1e6:.0f} "
                     f"| {f['parts_sum'] / 1e6:.0f} | {r['throughput_probe']} | {r['throughput_gflops']:.0f} "
                     f"| {r['first_update_max_abs_diff_current_vs_optimised']:.1e} |")
    lines += ["", "Probe GEMMs (GFLOP/s, median / best sample):", ""]
    for r in report["results"]:
        probes = ", ".join(f"{k} {v['median_gflops']:.0f} / {v['best_gflops']:.0f}" for k, v in r["matmul_probe"].items())
        lines.append(f"- ensemble {r['num_qs']}: {probes}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/learner_limit.json",
                   help="JSON path; the markdown table goes next to it with suffix .md")
    p.add_argument("--ensembles", default="2,10", help="comma-separated critic ensemble sizes")
    p.add_argument("--num-min-qs", type=int, default=2,
                   help="REDQ target subset for ensembles larger than this (RLPD: 2); smaller ensembles use all")
    p.add_argument("--utd", type=int, default=2, help="critic steps per update")
    p.add_argument("--repeats", type=int, default=40, help="alternating repeats (samples per variant)")
    p.add_argument("--inner", type=int, default=5, help="consecutive updates (or GEMMs) per sample")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. the machine's load)")
    args = p.parse_args()

    load_start = [round(x, 2) for x in os.getloadavg()]
    results = []
    for e in [int(x) for x in args.ensembles.split(",") if x.strip()]:
        num_min = args.num_min_qs if e > args.num_min_qs else None
        r = bench_ensemble(e, num_min, args.utd, args.repeats, args.inner)
        for name, v in r["variants"].items():
            print(f"ensemble {e:2d} {name:18s} {v['median_ms']:8.2f} ms  limit {r['limit_ms']:.2f} ms "
                  f"({r['throughput_gflops']:.0f} GFLOP/s, {r['flops_step'] / 1e6:.0f} MFLOP)  ratio {v['ratio']:.2f}",
                  flush=True)
        results.append(r)
    report = {
        "benchmark": "bench_learner_limit",
        "command": "PYTHONPATH=. python " + " ".join(
            [os.path.relpath(os.path.abspath(sys.argv[0]))] + [f"'{a}'" if " " in a else a for a in sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "note": args.note,
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "repeats": args.repeats,
        "inner": args.inner,
        "obs_dim": OBS_DIM,
        "action_dim": ACT_DIM,
        "hidden_dims": [HIDDEN, HIDDEN],
        "loadavg_start": load_start,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2)
    md = os.path.splitext(args.out)[0] + ".md"
    write_markdown(md, report)
    print(f"wrote {args.out} and {md}")


if __name__ == "__main__":
    main()
