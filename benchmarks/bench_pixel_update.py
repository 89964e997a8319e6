"""The learner's update cost from pixels: jitted ``SACAgent.update`` of ``hil_serl_cameras``.

  PYTHONPATH=. python benchmarks/bench_pixel_update.py [--image_size=64] [--batches=32,256]
      [--encoders=small_cnn,resnet10] [--scans=unrolled,rolled] [--seconds=10]
      [--out=benchmarks/results/pixel_update]

Sets the budgets of ``benchmarks/pixels.py`` (its docstring's probe ran starved beside a sweep).
The agent is built exactly as the learner builds it for ``pick-place,hil_serl_cameras`` (two
cameras, ``front`` and ``wrist``, at ``--image_size`` px plus the 4-D proprioception, UTD 2, the
preset's networks) with each encoder of ``--encoders``: ``small_cnn`` trained (the from-scratch
variant) and ``resnet10`` with ``agent.encoder.freeze=True`` when the config has that field (the
frozen pretrained variant; random weights time the same). The batch (``utd_ratio x B``
transitions of random uint8 frames and float32 state) is made once on the device, the first call
(compile) is timed apart, then update calls are timed for ``--seconds`` each, every call followed
by ``block_until_ready``. Outputs ``{--out}.md`` / ``.json`` with ms per update, updates per
second and the compile seconds, and the load average before and after (timings need a quiet
machine).

``--scans``: ``unrolled`` is the update as the learner runs it (an image encoder unrolls the
critic minibatches' ``lax.scan``, ``serl_ext.agents.common.unrolls_scan``); ``rolled`` forces the
rolled loop that every update used before (``sac._scan_unroll`` patched to 1 for that row), so
the two are timed in one run. ``cached`` (frozen encoders only) is ``learner.cache_frame_features``:
the agent built with ``agent.encoder.augmentation="none"``, the batch's frames replaced by their
backbone feature maps once (``SACAgent.frame_features_fn``, outside the timing) and the update
called with ``frame_features=True`` (head only); the row also gives the backbone's cost per new
frame (chunks of 64 frames of both cameras, as the buffer computes them), which the learner pays
once per stored frame: about 2 cameras x 1 new frame per env step, so per update at the actor's
``steps_per_update = 1``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def make_agent_and_batch(encoder: str, image_size: int, batch: int, seed: int = 0, augmentation: str = None):
    """``(agent, batch, utd)`` for ``pick-place,hil_serl_cameras`` with ``encoder`` (module docstring).

    Raises ValueError for an unknown encoder type (from the agent's config check)."""
    import jax
    import jax.numpy as jnp

    from configs.train import get_config
    from serl_ext.loop import common

    config = get_config("pick-place,hil_serl_cameras")
    config.env.image_size = int(image_size)
    config.agent.encoder.type = encoder
    if encoder == "resnet10" and "freeze" in config.agent.encoder:
        config.agent.encoder.freeze = True
    if augmentation is not None:
        config.agent.encoder.augmentation = augmentation
    utd = int(config.learner.utd_ratio)
    spec = {key: ((image_size, image_size, 3), np.uint8) for key in config.agent.encoder.image_keys}
    spec["state"] = ((4,), np.float32)
    agent = common.create_agent(config, spec, 4)
    rng = np.random.default_rng(seed)
    n = utd * int(batch)

    def obs():
        out = {k: jnp.asarray(rng.integers(0, 256, (n, *shape), dtype=np.uint8)) for k, (shape, dt) in spec.items()
               if dt == np.uint8}
        out["state"] = jnp.asarray(rng.standard_normal((n, 4)).astype(np.float32))
        return out

    data = {"observations": obs(), "next_observations": obs(),
            "actions": jnp.asarray(rng.uniform(-1, 1, (n, 4)).astype(np.float32)),
            "rewards": jnp.asarray((rng.random(n) < 0.05).astype(np.float32)),
            "masks": jnp.ones((n,), jnp.float32), "dones": jnp.zeros((n,), jnp.float32)}
    jax.block_until_ready(data)
    return agent, data, utd


def time_updates(agent, batch, utd: int, seconds: float, frame_features: bool = False):
    """``(compile_s, [seconds per call])``: the first call apart, then calls for ``seconds``."""
    import jax

    t0 = time.perf_counter()
    agent, info = agent.update(batch, utd_ratio=utd, frame_features=frame_features)
    jax.block_until_ready((agent, info))
    compile_s = time.perf_counter() - t0
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.perf_counter()
        agent, info = agent.update(batch, utd_ratio=utd, frame_features=frame_features)
        jax.block_until_ready((agent, info))
        times.append(time.perf_counter() - t)
    return compile_s, times


def cached_batch(agent, batch):
    """``(batch with feature maps, backbone ms per frame)``: ``batch``'s frames replaced by the
    frozen backbone's features (``SACAgent.frame_features_fn``) and the median cost of one frame
    of every camera, from chunks of 64 (the replay buffer's chunk)."""
    import jax

    fn = agent.frame_features_fn()
    keys = tuple(agent.config.encoder.image_keys)
    out = dict(batch)
    for part in ("observations", "next_observations"):
        out[part] = {**batch[part], **fn({k: batch[part][k] for k in keys})}
    chunk = {k: np.asarray(batch["observations"][k])[:64] for k in keys}
    n = len(next(iter(chunk.values())))
    fn(chunk)  # compile
    times = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(fn(chunk))
        times.append(time.perf_counter() - t)
    return out, 1000.0 * float(np.median(times)) / n


def rolled_scan(rolled: bool):
    """Context: with ``rolled``, ``sac._scan_unroll`` returns 1 (the rolled loop) while inside."""
    import contextlib
    from unittest import mock

    from serl_ext.agents import sac

    if not rolled:
        return contextlib.nullcontext()
    return mock.patch.object(sac, "_scan_unroll", lambda config, num_steps: 1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--batches", default="32,256")
    p.add_argument("--encoders", default="small_cnn,resnet10")
    p.add_argument("--scans", default="unrolled,rolled")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "pixel_update"))
    args = p.parse_args(argv)
    import jax

    load0 = os.getloadavg()
    rows = []
    for encoder in [e for e in args.encoders.split(",") if e]:
        for b in [int(x) for x in args.batches.split(",") if x]:
            for scan in [x for x in args.scans.split(",") if x]:
                if scan not in ("unrolled", "rolled", "cached"):
                    p.error(f"--scans: {scan!r} is none of unrolled, rolled, cached")
                if scan == "cached" and encoder != "resnet10":
                    continue  # only the frozen encoder has cached features
                agent, batch, utd = make_agent_and_batch(encoder, args.image_size, b,
                                                         augmentation="none" if scan == "cached" else None)
                frame_ms = None
                if scan == "cached":
                    batch, frame_ms = cached_batch(agent, batch)
                with rolled_scan(scan == "rolled"):
                    compile_s, times = time_updates(agent, batch, utd, args.seconds, frame_features=scan == "cached")
                ms = 1000.0 * float(np.median(times))
                row = {"encoder": encoder, "batch": b, "scan": scan, "utd": utd, "calls": len(times),
                       "compile_s": compile_s, "ms_median": ms, "ms_p90": 1000.0 * float(np.percentile(times, 90)),
                       "updates_per_s": 1000.0 / ms, "backbone_ms_per_frame": frame_ms}
                print(json.dumps(row), flush=True)
                rows.append(row)
    result = {"command": "PYTHONPATH=. python benchmarks/bench_pixel_update.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, jax {jax.__version__} ({jax.default_backend()})",
              "load_before": load0, "load_after": os.getloadavg(), "image_size": args.image_size, "rows": rows}
    lines = ["# Pixel learner update (`pick-place,hil_serl_cameras`)", "", f"Command: `{result['command']}`  ",
             f"Measured {result['date']} on {result['machine']}; load average {load0[0]:.2f} before, "
             f"{result['load_after'][0]:.2f} after. Two cameras at {args.image_size} px + 4-D proprio, UTD 2 "
             "(one call = 2 critic minibatches + actor + temperature), compile timed apart.", "",
             "| encoder | batch | critic scan | ms per update (median) | p90 ms | updates/s | compile s "
             "| backbone ms per new frame (both cameras) |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    labels = {"unrolled": "unrolled (as run)", "rolled": "rolled (before)",
              "cached": "cached features, head only (no augmentation)"}
    for r in rows:
        frame = "" if r.get("backbone_ms_per_frame") is None else f"{r['backbone_ms_per_frame']:.1f}"
        lines.append(f"| {r['encoder']}{' (frozen)' if r['encoder'] == 'resnet10' else ''} | {r['batch']} | "
                     f"{labels[r['scan']]} | {r['ms_median']:.1f} | {r['ms_p90']:.1f} | {r['updates_per_s']:.1f} | "
                     f"{r['compile_s']:.1f} | {frame} |")
    for enc in dict.fromkeys(r["encoder"] for r in rows):
        for b in dict.fromkeys(r["batch"] for r in rows):
            ms = {r["scan"]: r["ms_median"] for r in rows if r["encoder"] == enc and r["batch"] == b}
            if "rolled" in ms and "unrolled" in ms:
                lines.append(f"\n{enc}, batch {b}: rolled / unrolled = {ms['rolled'] / ms['unrolled']:.1f}x")
            if "cached" in ms and "unrolled" in ms:
                lines.append(f"\n{enc}, batch {b}: unrolled / cached = {ms['unrolled'] / ms['cached']:.1f}x "
                             "(the cached row pays the backbone once per new frame on top)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
