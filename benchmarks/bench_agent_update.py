"""Time ``SACAgent.update`` (jitted) in update calls per second.

Setting (DESIGN section 7 calibration): state observation 39-D, action 4-D, batch 256
per minibatch (the batch passed to ``update`` is ``utd_ratio * 256``), MLP (256, 256)
with LayerNorm, critic ensemble 2; UTD 1 and 2. ``--rlpd`` adds ensemble 10 / min over 2.
The batch is pre-generated on the device, so host-to-device transfer is excluded; every
timed call is followed by ``block_until_ready``.

    # from the repo root (or after `pip install -e .` without PYTHONPATH)
    PYTHONPATH=. python benchmarks/bench_agent_update.py --out runs/bench_agent_update.json [--rlpd]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from serl_ext.agents.sac import SACAgent, get_default_config

OBS_DIM, ACT_DIM, BATCH = 39, 4, 256


def make_batch(n: int, seed: int):
    r = np.random.default_rng(seed)
    batch = {
        "observations": {"state": r.normal(size=(n, OBS_DIM)).astype(np.float32)},
        "next_observations": {"state": r.normal(size=(n, OBS_DIM)).astype(np.float32)},
        "actions": r.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32),
        "rewards": (r.uniform(size=n) > 0.9).astype(np.float32),
        "masks": np.ones(n, np.float32),
    }
    return jax.tree_util.tree_map(jnp.asarray, batch)


def bench(num_qs: int, num_min_qs, utd: int, seconds: float, donate: bool) -> dict:
    c = get_default_config()
    c.hidden_dims = (256, 256)
    c.num_qs = num_qs
    c.num_min_qs = num_min_qs
    c.critic_target_clip = (0.0, 1.0)
    agent = SACAgent.create(
        jax.random.PRNGKey(0), {"state": np.zeros(OBS_DIM, np.float32)}, np.zeros(ACT_DIM, np.float32), c
    )
    batches = [make_batch(utd * BATCH, s) for s in range(4)]
    t0 = time.perf_counter()
    agent, info = agent.update(batches[0], utd_ratio=utd, donate=donate)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    for i in range(5):  # warm-up
        agent, info = agent.update(batches[i % 4], utd_ratio=utd, donate=donate)
    jax.block_until_ready(info)
    calls = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            agent, info = agent.update(batches[calls % 4], utd_ratio=utd, donate=donate)
            calls += 1
        jax.block_until_ready((agent, info))
    elapsed = time.perf_counter() - t0
    return {
        "num_qs": num_qs,
        "num_min_qs": num_min_qs,
        "utd_ratio": utd,
        "batch_per_minibatch": BATCH,
        "calls": calls,
        "seconds": round(elapsed, 3),
        "update_calls_per_s": round(calls / elapsed, 2),
        "critic_updates_per_s": round(calls * utd / elapsed, 2),
        "first_call_s_incl_compile": round(compile_s, 2),
        "critic_loss_finite": bool(np.isfinite(float(info["critic_loss"]))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write results as JSON to this path")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per setting")
    p.add_argument("--rlpd", action="store_true", help="also time ensemble 10 / num_min_qs 2")
    p.add_argument("--donate", action="store_true", help="donate the agent to each update")
    args = p.parse_args()

    settings = [(2, None, 1), (2, None, 2)]
    if args.rlpd:
        settings += [(10, 2, 1), (10, 2, 2)]
    results = []
    for num_qs, num_min, utd in settings:
        r = bench(num_qs, num_min, utd, args.seconds, args.donate)
        print(
            f"num_qs={num_qs:2d} num_min_qs={str(num_min):4s} utd={utd}: "
            f"{r['update_calls_per_s']:8.1f} update calls/s ({r['critic_updates_per_s']:.1f} critic updates/s)",
            flush=True,
        )
        results.append(r)
    report = {
        "benchmark": "bench_agent_update",
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "donate": args.donate,
        "obs_dim": OBS_DIM,
        "action_dim": ACT_DIM,
        "hidden_dims": [256, 256],
        "results": results,
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
