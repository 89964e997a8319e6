"""Time the learner step (``SACAgent.update``, jitted) on an accelerator, with XLA's FLOP count.

Settings: critic ensemble 2 (HiL-SERL) and 10 with the min over a random 2 (RLPD) x batch 256
and 1024 per minibatch, UTD 1 (``--utd``), the state-observation setting of
``benchmarks/bench_agent_update.py`` (39-D state, 4-D action, MLP (256, 256) + LayerNorm,
its ``make_batch``; the batch is pre-generated on the device, so host-to-device transfer is
excluded). Each setting: one call with compilation, warm-up calls, then calls for
``--seconds`` in chunks of 10, each chunk ended by ``block_until_ready``.

Per setting it reports update calls/s, ms per call, critic updates/s, FLOPs per call from XLA's
cost analysis of the compiled update, the achieved TFLOP/s (FLOPs per call x calls/s / 1e12)
and the peak device memory of the process so far (when the device reports it). XLA's cost analysis counts a
``while`` (``lax.scan``) body once, so for ``--utd`` > 1 the FLOPs per call are the UTD-1
update's plus ``utd - 1`` critic steps (each from the cost analysis of ``update_critic``).

Results: ``benchmarks/results/gpu_learner/gpu_learner.json`` and ``.md`` (``--out_dir``).
On a machine whose default jax device is the CPU the script refuses to run, unless
``--allow_cpu`` (a smoke test: 0.2 s per setting, nothing written unless ``--out_dir``).

    # on the GPU box, from the repo root, after `pip install -e '.[cuda]'` (one command, ~2 min)
    PYTHONPATH=. python benchmarks/bench_gpu_learner.py
    # smoke test on a CPU
    PYTHONPATH=. python benchmarks/bench_gpu_learner.py --allow_cpu --batches 256 --ensembles 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_agent_update import ACT_DIM, OBS_DIM, make_batch  # noqa: E402

from serl_ext.agents import sac  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gpu_learner")
HIDDEN = (256, 256)


def make_agent(num_qs: int) -> sac.SACAgent:
    """The benchmark's SAC agent: ensemble ``num_qs`` (min over 2 when it is above 2), MLP (256, 256),
    target clip (0, 1), seed 0."""
    c = sac.get_default_config()
    c.hidden_dims = HIDDEN
    c.num_qs = int(num_qs)
    c.num_min_qs = 2 if num_qs > 2 else None
    c.critic_target_clip = (0.0, 1.0)
    return sac.SACAgent.create(
        jax.random.PRNGKey(0), {"state": np.zeros(OBS_DIM, np.float32)}, np.zeros(ACT_DIM, np.float32), c
    )


def _flops(compiled) -> Optional[float]:
    """FLOPs of a compiled executable from XLA's cost analysis (None when not reported)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops >= 0 else None


def update_flops(agent: sac.SACAgent, batch: Dict[str, Any], utd: int) -> Optional[float]:
    """FLOPs of one ``agent.update(batch, utd)`` call: XLA's count of the UTD-1 update, plus
    ``utd - 1`` critic steps (the scan body is counted once by the cost analysis). float or None."""
    rows = int(batch["rewards"].shape[0]) // utd
    one = jax.tree_util.tree_map(lambda x: x[:rows], batch)
    checked = agent._check_batch(one, 1)
    base = _flops(sac._update_jit.lower(agent, checked, utd_ratio=1).compile())
    if base is None or utd == 1:
        return base
    critic = _flops(sac._update_critic_jit.lower(agent, checked).compile())
    return None if critic is None else base + (utd - 1) * critic


def _peak_memory_bytes(device) -> Optional[int]:
    try:
        stats = device.memory_stats() or {}
    except Exception:
        return None
    peak = stats.get("peak_bytes_in_use")
    return int(peak) if peak is not None else None


def bench(num_qs: int, batch_size: int, utd: int, seconds: float, warmup: int, donate: bool) -> Dict[str, Any]:
    """One setting; returns its result row (see the module docstring)."""
    agent = make_agent(num_qs)
    batches = [make_batch(utd * batch_size, s) for s in range(4)]
    flops = update_flops(agent, batches[0], utd)
    t0 = time.perf_counter()
    agent, info = agent.update(batches[0], utd_ratio=utd, donate=donate)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    for i in range(warmup):
        agent, info = agent.update(batches[i % 4], utd_ratio=utd, donate=donate)
    jax.block_until_ready((agent, info))
    calls = 0
    t0 = time.perf_counter()
    while calls == 0 or time.perf_counter() - t0 < seconds:
        for _ in range(10):
            agent, info = agent.update(batches[calls % 4], utd_ratio=utd, donate=donate)
            calls += 1
        jax.block_until_ready((agent, info))
    elapsed = time.perf_counter() - t0
    rate = calls / elapsed
    return {
        "num_qs": num_qs,
        "num_min_qs": 2 if num_qs > 2 else None,
        "batch_per_minibatch": batch_size,
        "utd_ratio": utd,
        "calls": calls,
        "seconds": round(elapsed, 3),
        "update_calls_per_s": round(rate, 2),
        "ms_per_call": round(1e3 / rate, 4),
        "critic_updates_per_s": round(rate * utd, 2),
        "first_call_s_incl_compile": round(compile_s, 2),
        "flops_per_call": flops,
        "achieved_tflops": None if flops is None else round(flops * rate / 1e12, 4),
        "peak_device_memory_bytes_so_far": _peak_memory_bytes(jax.devices()[0]),
        "critic_loss_finite": bool(np.isfinite(float(info["critic_loss"]))),
    }


def markdown(report: Dict[str, Any]) -> str:
    """The report as a markdown table (one row per setting)."""
    lines = [
        f"# Learner step on {report['device_kind']} ({report['backend']}, jax {report['jax']})",
        "",
        f"`SACAgent.update`, state {report['obs_dim']}-D, action {report['action_dim']}-D, MLP "
        f"{tuple(report['hidden_dims'])} + LayerNorm, UTD {report['utd_ratio']}, donate {report['donate']}. "
        "FLOPs: XLA cost analysis of the compiled update.",
        "",
        "| ensemble | batch | update calls/s | ms / call | critic updates/s | GFLOP / call | achieved TFLOP/s "
        "| compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        gflop = "n/a" if r["flops_per_call"] is None else f"{r['flops_per_call'] / 1e9:.3f}"
        tflops = "n/a" if r["achieved_tflops"] is None else f"{r['achieved_tflops']:.3f}"
        ens = f"{r['num_qs']}" + ("" if r["num_min_qs"] is None else f" (min of {r['num_min_qs']})")
        lines.append(
            f"| {ens} | {r['batch_per_minibatch']} | {r['update_calls_per_s']:.1f} | {r['ms_per_call']:.3f} | "
            f"{r['critic_updates_per_s']:.1f} | {gflop} | {tflops} | {r['first_call_s_incl_compile']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default=None,
                   help=f"where gpu_learner.json/.md go (default on an accelerator: {DEFAULT_OUT}; on a CPU: none)")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per setting (5; 0.2 with --allow_cpu)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per setting (10; 1 with --allow_cpu)")
    p.add_argument("--ensembles", type=int, nargs="+", default=[2, 10], help="critic ensemble sizes")
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024], help="batch sizes per minibatch")
    p.add_argument("--utd", type=int, default=1, help="critic minibatches per update call")
    p.add_argument("--donate", action="store_true", help="donate the agent to each update")
    p.add_argument("--allow_cpu", action="store_true", help="run on a CPU too (a smoke test)")
    args = p.parse_args(argv)

    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    if on_cpu and not args.allow_cpu:
        sys.exit(f"jax's default device is {device} (no accelerator): this benchmark is for a GPU. Install "
                 "`pip install -e '.[cuda]'` on the GPU box, or pass --allow_cpu for a smoke test.")
    seconds = args.seconds if args.seconds is not None else (0.2 if on_cpu else 5.0)
    warmup = args.warmup if args.warmup is not None else (1 if on_cpu else 10)
    out_dir = args.out_dir if args.out_dir is not None else (None if on_cpu else DEFAULT_OUT)
    print(f"device: {device} ({getattr(device, 'device_kind', device.platform)}), jax {jax.__version__}", flush=True)

    results = []
    for num_qs in args.ensembles:
        for batch_size in args.batches:
            r = bench(num_qs, batch_size, args.utd, seconds, warmup, args.donate)
            tf = "n/a" if r["achieved_tflops"] is None else f"{r['achieved_tflops']:.3f}"
            print(f"ensemble {num_qs:2d} batch {batch_size:5d} utd {args.utd}: {r['update_calls_per_s']:9.1f} calls/s "
                  f"({r['ms_per_call']:.3f} ms), {tf} TFLOP/s", flush=True)
            results.append(r)
    report = {
        "benchmark": "bench_gpu_learner",
        "device": str(device),
        "device_kind": getattr(device, "device_kind", device.platform),
        "device_count": jax.device_count(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "smoke_test_on_cpu": on_cpu,
        "donate": args.donate,
        "utd_ratio": args.utd,
        "obs_dim": OBS_DIM,
        "action_dim": ACT_DIM,
        "hidden_dims": list(HIDDEN),
        "seconds_per_setting": seconds,
        "results": results,
    }
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "gpu_learner.json"), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(out_dir, "gpu_learner.md"), "w") as f:
            f.write(markdown(report))
        print(f"wrote {out_dir}/gpu_learner.json and .md")
    return report


if __name__ == "__main__":
    main()
