"""The learner process: owns the replay buffers, trains the agent with RLPD batches and pushes
parameters to the actor.

Per learner step (HiL-SERL/RLPD, DESIGN.md section 3): sample ``utd_ratio`` minibatches of
``batch_size`` rows, each half online / half demo+intervention (``demo_fraction``); the agent
runs ``utd_ratio - 1`` critic-only updates and one full update inside one jitted ``lax.scan``.
Parameters are published every ``publish_period`` steps with a version number and the learner
step (the actor uses the latter to keep the data/update ratio), as a
``serl_ext/loop/param_message.py`` message. What the algorithm adds on the learner side (its
``config.components.learner_extension``, ``serl_ext/loop/extension.py``) sees every online
transition, trains after each update, contributes its part of the message and is saved with
each checkpoint in ``{run_dir}/{extension.name}``. Checkpoints (agent, optimizer
states, both buffers, counters) every ``checkpoint_period`` steps and at the end; a restarted
learner resumes from the newest one.

Outputs in the run folder: ``checkpoints/``, ``learner_summary.json``,
``metrics/learner.jsonl``, ``tb/learner`` (train/ keys), ``learner_config.json``.
"""

import logging
import os
import threading
import time
from typing import Any, Dict

import jax
import numpy as np
from tqdm import tqdm

from serl_ext.loop import common, components
from serl_ext.loop.checkpoint import Checkpointer, make_policy_spec
from serl_ext.loop.common import DATA_STORE, INTERVENTION_STORE, transport_config
from serl_ext.loop.extension import TeeStore
from serl_ext.loop.logging import MetricLogger
from serl_ext.loop.param_message import build_message

log = logging.getLogger(__name__)


def load_demos(config, buffer) -> int:
    """Loads the demo episodes of ``config.demos`` into ``buffer``; returns transitions loaded.

    Per-step extras the buffer does not store (e.g. ``success``) are dropped; an extra it
    stores but an older demo file lacks (``grasp_penalty``) gets the buffer's default (0).

    Raises:
      FileNotFoundError: demos are required (``num_demos > 0``) but the folder has none; the
        message says how to collect them.
      ValueError: a demo step does not fit the buffer (message names the file).
    """
    from serl_ext.data.episodes import list_episodes, load_episodes_into_buffer

    if int(config.demos.num_demos) <= 0:
        return 0
    directory = common.demo_dir_for(config)
    paths = list_episodes(directory) if os.path.isdir(directory) else []
    if not paths:
        raise FileNotFoundError(
            f"no demo episodes in {directory}; collect them first with "
            f"`python launchers/collect_demos.py --task {config.task} --num_demos {config.demos.num_demos}` "
            "(launchers/run_task.sh does this automatically) or set --config.demos.num_demos=0"
        )
    return load_episodes_into_buffer(paths[: int(config.demos.num_demos)], buffer)


class _Control:
    """Requests from the actor, handled on the transport thread."""

    def __init__(self):
        self.actor_done = threading.Event()
        self.actor_stats: Dict[str, Any] = {}

    def __call__(self, request_type: str, payload: Any):
        if request_type == "actor_done":
            self.actor_done.set()
            return {"ok": True}
        if request_type == "actor_stats":
            if isinstance(payload, dict):
                self.actor_stats = payload
            return {"ok": True}
        return {"ok": False, "error": f"unknown request {request_type!r}"}


def run_learner(config, server=None) -> Dict[str, Any]:
    """Runs the learner until the actor reports done (or ``learner.max_steps``).

    Returns the learner summary dict (also written to ``learner_summary.json``).
    """
    from serl_ext.data.replay_buffer import sample_mixed_many
    from serl_ext.transport import TrainerServer

    run_dir = common.run_dir_for(config)
    os.makedirs(run_dir, exist_ok=True)
    common.write_config(run_dir, config, "learner")

    agent, spec, action_dim = common.agent_for_task(config)
    replay = common.make_buffer(spec, action_dim, int(config.learner.replay_capacity), seed=config.seed,
                                with_extras=True)
    demo = common.make_buffer(spec, action_dim, int(config.learner.demo_capacity), seed=config.seed + 1,
                              with_extras=True)

    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
    policy_spec = make_policy_spec(config, spec, action_dim)  # load_agent(run_dir) rebuilds the policy from it
    step, version = 0, 0
    if checkpointer.latest_step() is not None:
        agent, buffers, counters = checkpointer.restore(agent)
        replay.load_state_dict(buffers["replay"])
        demo.load_state_dict(buffers["demo"])
        step, version = int(counters["learner_step"]), int(counters["version"])
        log.info("resumed learner at step %d (%d online, %d demo transitions)", step, len(replay), len(demo))
        tqdm.write(f"[learner] resumed from checkpoint at step {step}")
    else:
        n = load_demos(config, demo)
        tqdm.write(f"[learner] loaded {n} demo transitions from {common.demo_dir_for(config)}")

    ext = components.make_learner_extension(config, spec, action_dim, run_dir, resumed=step > 0)

    control = _Control()
    if server is None:
        server = TrainerServer(transport_config(config), request_callback=control)
    if ext is None:
        server.register_data_store(DATA_STORE, replay)
    else:  # every transition also goes to the learner extension
        server.register_data_store(DATA_STORE, TeeStore(replay, ext.on_transition))
    server.register_data_store(INTERVENTION_STORE, demo)
    server.start(threaded=True)
    logger = MetricLogger(run_dir, "learner", tensorboard=config.logging.tensorboard)

    def publish(force_parts: bool = False):
        nonlocal version
        version += 1
        parts = {}
        # The extension's part rides along on its own schedule (or when forced: heartbeats, end).
        part = ext.message_part(step, force_parts) if ext is not None else None
        if part is not None:
            parts[ext.name] = part
        server.publish_network(build_message(version, step, common.to_numpy_tree(agent.policy_params()), parts))

    def save():
        checkpointer.save(
            step,
            agent,
            {"replay": replay.state_dict(), "demo": demo.state_dict()},
            {"learner_step": step, "version": version},
            policy_spec=policy_spec,
        )
        if ext is not None:
            ext.save(os.path.join(run_dir, ext.name))

    batch_size = int(config.learner.batch_size)
    utd = int(config.learner.utd_ratio)
    demo_fraction = float(config.learner.demo_fraction)
    training_starts = max(int(config.learner.training_starts), 1)
    publish()
    last_publish = time.time()
    last_data = time.time()
    last_sizes = (len(replay), len(demo))
    start = time.time()
    steps_at_start = step
    window_t, window_steps = time.time(), step
    pbar = tqdm(desc="learner steps", initial=step, disable=not config.logging.progress_bar, dynamic_ncols=True)
    try:
        while step < int(config.learner.max_steps) and not control.actor_done.is_set():
            sizes = (len(replay), len(demo))
            if sizes != last_sizes:
                last_data, last_sizes = time.time(), sizes
            elif config.learner.idle_timeout_s and time.time() - last_data > float(config.learner.idle_timeout_s):
                tqdm.write("[learner] no data from the actor for a while; stopping")
                break
            if len(replay) < training_starts:
                worked = ext is not None and bool(ext.warmup_step())  # its models need no agent warm-up
                if time.time() - last_publish > 1.0:  # heartbeat so the actor knows we are up
                    publish(force_parts=True)
                    last_publish = time.time()
                if not worked:
                    time.sleep(0.01)
                continue
            if len(demo) == 0 or demo_fraction <= 0:
                fractions = (1.0, 0.0)
            else:
                fractions = (1.0 - demo_fraction, demo_fraction)
            batch = sample_mixed_many([replay, demo], batch_size, utd, fractions=fractions)
            agent, info = agent.update(batch, utd)
            step += 1
            if ext is not None:
                ext.train_step(step)
            pbar.update(1)
            if step % int(config.learner.publish_period) == 0:
                publish()
                last_publish = time.time()
            if step % int(config.learner.log_period) == 0:
                now = time.time()
                scalars = {f"train/{k}": float(v) for k, v in jax.device_get(info).items() if np.ndim(v) == 0}
                if not all(np.isfinite(v) for v in scalars.values()):
                    bad = sorted(k for k, v in scalars.items() if not np.isfinite(v))
                    raise FloatingPointError(
                        f"training diverged at learner step {step} (non-finite {bad}); parameters are not "
                        "published and the last checkpoint is kept; lower the learning rates or check the data"
                    )
                scalars["train/updates_per_s"] = (step - window_steps) / max(now - window_t, 1e-9)
                scalars["train/replay_size"] = len(replay)
                scalars["train/demo_size"] = len(demo)
                scalars["train/rejected_messages"] = getattr(server, "num_rejected", 0)
                if ext is not None:
                    scalars.update(ext.stats())
                window_t, window_steps = now, step
                logger.log(scalars, step)
                pbar.set_postfix(critic=f"{scalars.get('train/critic_loss', float('nan')):.3g}", replay=len(replay))
            if int(config.learner.checkpoint_period) and step % int(config.learner.checkpoint_period) == 0:
                save()
        publish(force_parts=True)
        save()
    finally:
        pbar.close()
        elapsed = time.time() - start
        summary = {
            "task": config.task,
            "algorithm": config.algorithm,
            "seed": int(config.seed),
            "learner_steps": step,
            "updates_per_s": (step - steps_at_start) / max(elapsed, 1e-9),
            "replay_size": len(replay),
            "demo_size": len(demo),
            "rejected_messages": int(getattr(server, "num_rejected", 0)),
            "wall_clock_s": elapsed,
        }
        if ext is not None:
            summary.update({k.replace("/", "_"): v for k, v in ext.stats().items()})
        common.atomic_write_json(os.path.join(run_dir, "learner_summary.json"), summary)
        logger.close()
        server.stop()
        checkpointer.close()
    return summary
