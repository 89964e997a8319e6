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
learner resumes from the newest intact one.

Reliability (issue 15, ``docs/reliability.md``):

* Buffers are bounded by the task's spaces (``common.value_bounds``); a refused insert is
  counted (``replay_out_of_bounds``, ``transport_insert_errors``), never stored.
* Restore: the checkpointer verifies each step (manifest, finiteness) and runs the buffers'
  ``load_state_dict`` and the transport ids as its ``validate`` hook, falling back to the next
  older intact step; no intact step ends the process with a message (``SystemExit``) and
  ``learner_summary.json`` holding ``error`` and ``restore_report``.
* No acknowledged transition lost: the server runs with ``durable_ack=True``; each checkpoint
  holds the transport ids taken while inserts are held (so they match the buffers exactly),
  and only then are they declared durable (the actor deletes its copies up to them). A
  restarted learner restores those ids, so the actor resends exactly what came after the
  checkpoint: a SIGKILL at any moment loses and duplicates nothing (within the actor's
  ``queue_capacity``).
* Divergence guard: an update whose loss or new parameters are non-finite is skipped, the last
  good agent kept; ``learner.divergence_restore_after`` in a row restore the agent from the
  newest intact checkpoint (buffers and counters kept); more than
  ``learner.max_divergence_restores`` restores stop the run (FloatingPointError).
* Liveness: no actor message for ``learner.actor_timeout_s`` is logged (and counted) once per
  silence; the summary says whether the actor finished, went silent or never connected.

Outputs in the run folder: ``checkpoints/``, ``learner_summary.json``,
``metrics/learner.jsonl``, ``tb/learner`` (train/ keys), ``learner_config.json``.
"""

import contextlib
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from serl_ext.agents.data_parallel import make_updater
from serl_ext.loop import common, components
from serl_ext.loop.checkpoint import CheckpointError, Checkpointer, make_policy_spec
from serl_ext.loop.common import DATA_STORE, INTERVENTION_STORE, transport_config
from serl_ext.loop.extension import TeeStore
from serl_ext.loop.logging import make_logger
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
            f"`python launchers/collect_demos.py --task {config.task} --algorithm {config.algorithm} "
            f"--num_demos {config.demos.num_demos}` (with this run's --config.env.* flags) "
            "(launchers/run_task.sh does this automatically) or set --config.demos.num_demos=0"
        )
    return load_episodes_into_buffer(paths[: int(config.demos.num_demos)], buffer)


class _Control:
    """Requests from the actors, handled on the transport thread.

    With ``num_actors`` actors, ``actor_done`` / ``actor_closed`` are set once every actor id
    ``0 .. num_actors - 1`` has sent its ``actor_done`` / ``actor_closed`` (a payload without
    ``actor_id`` counts as actor 0; an id outside the range is refused). ``actor_report`` is
    actor 0's final delivery counters, ``actor_reports`` every actor's by id.
    """

    def __init__(self, num_actors: int = 1):
        self.num_actors = int(num_actors)
        self.actor_done = threading.Event()
        self.actor_closed = threading.Event()
        self.actor_stats: Dict[str, Any] = {}
        self.actors_done: set = set()
        self.actors_closed: set = set()
        self.actor_reports: Dict[int, Dict[str, Any]] = {}
        self.actor_counts: Dict[int, Dict[str, int]] = {}

    @property
    def actor_report(self) -> Dict[str, Any]:
        return self.actor_reports.get(0, {})

    def _actor_id(self, payload: Any) -> Optional[int]:
        k = payload.get("actor_id", 0) if isinstance(payload, dict) else 0
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_actors:
            return None
        return k

    def __call__(self, request_type: str, payload: Any):
        if request_type in ("actor_done", "actor_closed"):
            k = self._actor_id(payload)
            if k is None:
                return {"ok": False, "error": f"actor_id must be an int in [0, {self.num_actors}) "
                                              "(learner.num_actors)"}
            if request_type == "actor_done":
                counts = _fleet_counts(payload)
                if counts:  # a repeat (a resumed actor) replaces the earlier totals
                    self.actor_counts[k] = counts
                self.actors_done.add(k)
                if len(self.actors_done) >= self.num_actors:
                    self.actor_done.set()
                return {"ok": True}
            if isinstance(payload, dict):  # the actor's final delivery counters
                self.actor_reports[k] = {str(key): v for key, v in payload.items()
                                         if key != "actor_id" and (v is None or isinstance(v, (int, float)))}
            self.actors_closed.add(k)
            if len(self.actors_closed) >= self.num_actors:
                self.actor_closed.set()
            return {"ok": True}
        if request_type == "actor_stats":
            if isinstance(payload, dict):
                self.actor_stats = payload
            return {"ok": True}
        return {"ok": False, "error": f"unknown request {request_type!r}"}


def _fleet_counts(payload: Any) -> Dict[str, int]:
    """The :data:`common.FLEET_COUNT_KEYS` of an ``actor_done`` payload that are non-negative
    ints below 2**53 (anything else from the wire is left out); ``{}`` for a payload without
    them (an older actor)."""
    if not isinstance(payload, dict):
        return {}
    out = {}
    for key in common.FLEET_COUNT_KEYS:
        v = payload.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53:
            out[key] = int(v)
    return out


def fleet_totals(actor_counts: Dict[int, Dict[str, int]], num_actors: int) -> Optional[Dict[str, Any]]:
    """``learner_summary.json`` ``fleet``: every actor's training totals summed (``actors``: how
    many of ``num_actors`` reported them), with the fleet's ``intervention_rate`` (human steps /
    env steps, the steps pooled, as one actor's summary computes its own) and
    ``train_success_rate`` (successes / episodes); None when no actor reported."""
    if not actor_counts:
        return None
    total = {key: sum(c.get(key, 0) for c in actor_counts.values()) for key in common.FLEET_COUNT_KEYS}
    total.update(actors=len(actor_counts), num_actors=int(num_actors),
                 intervention_rate=total["human_steps"] / max(total["env_steps"], 1),
                 train_success_rate=total["successes"] / max(total["episodes"], 1))
    return total


class _CountingStore:
    """A transport data store that inserts into ``store`` and counts the inserts (``count``,
    from ``start``): the online transitions received over the run, which ``len(store)`` stops
    telling once a bounded buffer is full."""

    def __init__(self, store, start: int = 0):
        self.store = store
        self.count = int(start)

    def insert(self, transition):
        self.store.insert(transition)
        self.count += 1

    def __len__(self):
        return len(self.store)


def hold_limit(online_transitions: int, training_starts: int, steps_per_update: float, slack: int) -> float:
    """The learner step the learner may reach before it waits for more actor data.

    Args:
      online_transitions: online transitions received so far (int, the whole run).
      training_starts: ``learner.training_starts`` (transitions before the first update).
      steps_per_update: ``actor.steps_per_update`` (env steps per learner step, > 0).
      slack: ``learner.hold_slack`` (learner steps).
    Returns:
      ``(online_transitions - training_starts) / steps_per_update + slack`` (float); the
      learner updates while its step is below it. With the actor's throttle (env steps at most
      ``training_starts + steps_per_update * learner_step + throttle_slack``) the two can never
      wait on each other at once while both slacks are positive.
    """
    return (int(online_transitions) - int(training_starts)) / float(steps_per_update) + int(slack)


def attach_frame_features(config, agent, buffers):
    """``learner.cache_frame_features``: attach the agent's frozen backbone to ``buffers``
    (``ReplayBuffer.attach_frame_features``) and return the update to use,
    ``agent.update(batch, utd, frame_features=True)``.

    Raises ValueError: the agent has no frame-feature update (only SAC and its hybrid do), a
    data-parallel learner, or what ``SACAgent.frame_features_fn`` raises (no frozen backbone,
    augmentation on)."""
    if not hasattr(agent, "frame_features_fn"):
        raise ValueError(f"learner.cache_frame_features: {type(agent).__name__} has no frame-feature "
                         "update (SAC and hybrid SAC have)")
    if int(config.learner.get("data_parallel_devices", 0) or 0) > 1:
        raise ValueError("learner.cache_frame_features does not combine with data_parallel_devices > 1")
    try:
        fn = agent.frame_features_fn()
    except ValueError as e:
        raise ValueError(f"learner.cache_frame_features: {e}") from None
    keys = tuple(agent.config.encoder.image_keys)
    for buffer in buffers:
        buffer.attach_frame_features(fn, keys)
    return lambda a, batch, utd_ratio=1: a.update(batch, utd_ratio, frame_features=True)


@jax.jit
def _all_finite(tree) -> jax.Array:
    """True when every float leaf of ``tree`` (agent, update info) is finite; one bool scalar."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _count(obj, name: str) -> int:
    value = getattr(obj, name, 0)
    return int(value) if isinstance(value, (int, np.integer)) else 0


# Server counters of learner_summary.json (this learner process) -> TrainerServer attribute.
_SERVER_COUNTERS = {
    "transport_items_stored": "num_items_inserted",
    "transport_duplicates": "num_duplicates",
    "transport_insert_errors": "num_insert_errors",
    "transport_unauthenticated": "num_unauthenticated",
    "transport_replayed": "num_replayed",
}


def run_learner(config, server=None) -> Dict[str, Any]:
    """Runs the learner until the actor reports done (or ``learner.max_steps``); with
    ``learner.num_actors`` N > 1, until all N actors (ids 0 .. N-1) reported done. Transitions of
    every actor go to the same buffers; the hold counts them all.

    Args:
      config: the composed training config (configs/train.py).
      server: an object with the TrainerServer interface (tests pass a fake); default: a
        :class:`serl_ext.transport.TrainerServer` with ``durable_ack=True`` on
        ``config.transport``. Optional parts (``hold_inserts``, ``mark_durable``,
        ``restore_ids``, the counters, ``last_contact_time``) are used when present.
    Returns:
      the learner summary dict (also written to ``learner_summary.json``): the results
      (``learner_steps``, ``updates_per_s``, buffer sizes, ``rejected_messages``, the
      extension's stats) and the reliability counters: ``restored_step`` (None: fresh start)
      and ``restore_report`` (steps skipped as not intact); this process's
      ``transport_items_received`` / ``transport_items_stored``, ``transport_duplicates``
      (resent items refused), ``transport_insert_errors`` (items the buffers refused),
      ``transport_unauthenticated``, ``transport_replayed``; over the whole run (all learner
      processes, through the checkpoints) ``transport_items_restored`` (stored as of the
      restored checkpoint) and ``transport_items_stored_total``,
      ``transport_insert_errors_total``; ``durable_ack``; ``replay_out_of_bounds``,
      ``demo_out_of_bounds``; ``divergence_recoveries``, ``divergence_restores``;
      ``actor_status`` ("done", "silent", "connected", "never connected", "unknown"),
      ``actor_silences``, ``actor_last_contact_age_s``, ``actor_report`` (the actor's final
      delivery counters, when it sent them; actor 0's with several), ``num_actors``,
      ``actors_done`` (the ids that reported done) and ``actor_reports`` (by id); ``fleet``
      (:func:`fleet_totals`: the actors' training totals summed, the pooled intervention rate and
      training SR; None before any actor is done); the hold (``learner.hold_to_actor``):
      ``online_transitions`` (received over the run), ``updates_per_env_step`` (learner steps
      per online transition after ``training_starts``), ``hold_to_actor``, ``hold_wait_s``
      (seconds spent waiting for the actor) and ``hold_waits`` (how often it started waiting).
    Raises:
      SystemExit: checkpoints exist but none is intact (the message lists each step and why).
      FloatingPointError: training keeps diverging (``learner.max_divergence_restores``).
    """
    from serl_ext.data.replay_buffer import sample_mixed_many
    from serl_ext.transport import TrainerServer

    run_dir = common.run_dir_for(config)
    os.makedirs(run_dir, exist_ok=True)
    common.write_config(run_dir, config, "learner")
    summary_path = os.path.join(run_dir, "learner_summary.json")

    spec, action_dim, bounds = common.task_spaces(config)
    agent = common.create_agent(config, spec, action_dim)
    replay = common.make_buffer(spec, action_dim, int(config.learner.replay_capacity), seed=config.seed,
                                with_extras=True, value_bounds=bounds)
    demo = common.make_buffer(spec, action_dim, int(config.learner.demo_capacity), seed=config.seed + 1,
                              with_extras=True, value_bounds=bounds)

    _, num_actors = common.actor_fleet(config)
    control = _Control(num_actors)
    if server is None:
        server = TrainerServer(transport_config(config), request_callback=control, durable_ack=True)
    durable = bool(getattr(server, "durable_ack", False))

    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"),
                                max_to_keep=int(config.learner.get("checkpoints_to_keep", 2)))
    policy_spec = make_policy_spec(config, spec, action_dim)  # load_agent(run_dir) rebuilds the policy from it
    step, version = 0, 0
    # Run totals as of the restored checkpoint (the transport counters of earlier processes).
    totals = {"stored": 0, "insert_errors": 0, "online": 0}
    restored_step: Optional[int] = None
    restore_report: List[str] = []
    if checkpointer.latest_step() is not None:
        def load_into_buffers(restored_agent, buffers, counters):
            # The buffers' own checks (finiteness, value bounds) and the transport ids decide
            # too: a step failing them is skipped like a corrupted one.
            replay.load_state_dict(buffers["replay"])
            demo.load_state_dict(buffers["demo"])
            if hasattr(server, "restore_ids"):
                server.restore_ids(counters.get("transport_ids", []))

        try:
            agent, buffers, counters = checkpointer.restore(agent, validate=load_into_buffers)
        except CheckpointError as e:
            message = (f"[learner] cannot resume from {checkpointer.directory}: {e}\n"
                       "Move that folder away to start the learner from scratch.")
            common.atomic_write_json(summary_path, {
                "task": config.task, "algorithm": config.algorithm, "seed": int(config.seed),
                "error": str(e), "restored_step": None, "restore_report": list(checkpointer.restore_report)})
            checkpointer.close()
            raise SystemExit(message) from None
        del buffers
        restored_step, restore_report = checkpointer.restored_step, list(checkpointer.restore_report)
        step, version = int(counters["learner_step"]), int(counters["version"])
        for k in ("stored", "insert_errors"):
            totals[k] = int(counters.get("transport_totals", {}).get(k, 0))
        # Older checkpoints have no count of online transitions: the buffer's size is the best guess.
        totals["online"] = int(counters.get("online_transitions", len(replay)))
        log.info("resumed learner at step %d (%d online, %d demo transitions)", step, len(replay), len(demo))
        older = f" (newer steps not intact: {len(restore_report)}, see the log)" if restore_report else ""
        tqdm.write(f"[learner] resumed from checkpoint {restored_step} at learner step {step}{older}; "
                   f"{totals['stored']} transitions received before it")
    else:
        n = load_demos(config, demo)
        tqdm.write(f"[learner] loaded {n} demo transitions from {common.demo_dir_for(config)}")

    ext = components.make_learner_extension(config, spec, action_dim, run_dir, resumed=step > 0)

    online = _CountingStore(replay if ext is None else TeeStore(replay, ext.on_transition), start=totals["online"])
    server.register_data_store(DATA_STORE, online)  # with an extension, every transition also goes to it
    server.register_data_store(INTERVENTION_STORE, demo)
    server.start(threaded=True)
    logger = make_logger(config, run_dir, "learner")

    def publish(force_parts: bool = False):
        nonlocal version
        version += 1
        parts = {}
        # The extension's part rides along on its own schedule (or when forced: heartbeats, end).
        part = ext.message_part(step, force_parts) if ext is not None else None
        if part is not None:
            parts[ext.name] = part
        server.publish_network(build_message(version, step, common.to_numpy_tree(agent.policy_params()), parts))

    def run_totals() -> Dict[str, int]:
        return {"stored": totals["stored"] + _count(server, "num_items_inserted"),
                "insert_errors": totals["insert_errors"] + _count(server, "num_insert_errors")}

    def save():
        # No insert while the state dicts (and the extension) are taken: the transport ids
        # describe exactly what they hold. Only once the checkpoint is complete are the ids
        # declared durable, and the actor deletes its copies.
        hold = getattr(server, "hold_inserts", None)
        with (hold() if hold is not None else contextlib.nullcontext([])) as ids:
            buffers = {"replay": replay.state_dict(), "demo": demo.state_dict()}
            run_counts = run_totals()
            online_count = online.count
            if ext is not None:
                ext.save(os.path.join(run_dir, ext.name))
        checkpointer.save(
            step,
            agent,
            buffers,
            {"learner_step": step, "version": version, "transport_ids": ids, "transport_totals": run_counts,
             "online_transitions": online_count},
            policy_spec=policy_spec,
        )
        if hasattr(server, "mark_durable"):
            server.mark_durable(ids)

    guard = {"recoveries": 0, "restores": 0, "streak": 0}
    restore_after = max(int(config.learner.get("divergence_restore_after", 10)), 1)
    max_restores = int(config.learner.get("max_divergence_restores", 5))

    def diverged(info) -> None:
        """A non-finite update: keep the last good agent; after restore_after in a row, restore
        the agent from the newest intact checkpoint."""
        nonlocal agent
        guard["recoveries"] += 1
        guard["streak"] += 1
        bad = sorted(k for k, v in jax.device_get(info).items() if not np.all(np.isfinite(np.asarray(v, np.float64))))
        tqdm.write(f"[learner] non-finite update after learner step {step} ({', '.join(bad) or 'parameters'}): "
                   f"batch skipped, last good agent kept ({guard['streak']} in a row, "
                   f"{guard['recoveries']} in all)")
        logger.log({"train/divergence_recoveries": guard["recoveries"]}, step)
        if guard["streak"] < restore_after:
            return
        guard["restores"] += 1
        if guard["restores"] > max_restores or checkpointer.latest_step() is None:
            why = ("no checkpoint to restore" if checkpointer.latest_step() is None
                   else f"{guard['restores'] - 1} restores did not help")
            raise FloatingPointError(
                f"training diverged at learner step {step}: {restore_after} non-finite updates in a row and "
                f"{why}; parameters with NaN/inf were never published or saved; lower the learning rates "
                "or check the data")
        agent, _ = checkpointer.restore_agent(agent)
        guard["streak"] = 0
        tqdm.write(f"[learner] {restore_after} non-finite updates in a row: agent restored from checkpoint "
                   f"{checkpointer.restored_step} (buffers and counters kept; restore {guard['restores']} of at "
                   f"most {max_restores})")
        logger.log({"train/divergence_restores": guard["restores"]}, step)

    actor_timeout = float(config.learner.get("actor_timeout_s", 0.0) or 0.0)
    live = {"silent": False, "silences": 0, "never_warned": False}

    def check_actor(now: float) -> None:
        """Logs (once per silence) an actor that sent nothing for actor_timeout_s."""
        if actor_timeout <= 0 or control.actor_done.is_set() or not hasattr(server, "last_contact_time"):
            return
        last = server.last_contact_time
        if last is None:
            if not live["never_warned"] and now - start > actor_timeout:
                live["never_warned"] = True
                tqdm.write(f"[learner] no actor has connected in {now - start:.0f} s; is launchers/actor.sh "
                           "running with the same task, ports and key?")
            return
        silent_for = now - last
        if silent_for > actor_timeout and not live["silent"]:
            live["silent"] = True
            live["silences"] += 1
            tqdm.write(f"[learner] no message from the actor for {silent_for:.0f} s (> learner.actor_timeout_s="
                       f"{actor_timeout:g}); it may have stopped or lost the network; still serving")
            logger.log({"train/actor_silences": live["silences"]}, step)
        elif silent_for <= actor_timeout and live["silent"]:
            live["silent"] = False
            tqdm.write("[learner] the actor is back")

    batch_size = int(config.learner.batch_size)
    utd = int(config.learner.utd_ratio)
    # learner.data_parallel_devices >= 2: the update split over that many devices (0/1: off).
    update_agent = make_updater(int(config.learner.get("data_parallel_devices", 0) or 0))
    frame_features = bool(config.learner.get("cache_frame_features", False))
    if frame_features:
        update_agent = attach_frame_features(config, agent, (replay, demo))
    demo_fraction = float(config.learner.demo_fraction)
    training_starts = max(int(config.learner.training_starts), 1)
    steps_per_update = float(config.actor.get("steps_per_update", 0.0) or 0.0)
    hold = bool(config.learner.get("hold_to_actor", False)) and steps_per_update > 0
    hold_slack = int(config.learner.get("hold_slack", 200))
    held = {"wait_s": 0.0, "waits": 0, "waiting": False}
    start = time.time()
    publish()
    last_publish = time.time()
    last_data = time.time()
    last_sizes = (len(replay), len(demo))
    steps_at_start = step
    window_t, window_steps = time.time(), step
    pbar = tqdm(desc="learner steps", initial=step, disable=not config.logging.progress_bar, dynamic_ncols=True)
    try:
        while step < int(config.learner.max_steps) and not control.actor_done.is_set():
            now = time.time()
            check_actor(now)
            sizes = (len(replay), len(demo))
            if sizes != last_sizes:
                last_data, last_sizes = now, sizes
            elif config.learner.idle_timeout_s and now - last_data > float(config.learner.idle_timeout_s):
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
            if hold and step >= hold_limit(online.count, training_starts, steps_per_update, hold_slack):
                # Ahead of the actor: wait for its data (heartbeats keep the actor's view of us alive).
                if not held["waiting"]:
                    held["waiting"], held["waits"] = True, held["waits"] + 1
                if time.time() - last_publish > 1.0:
                    publish()
                    last_publish = time.time()
                time.sleep(0.002)
                held["wait_s"] += time.time() - now
                continue
            held["waiting"] = False
            if len(demo) == 0 or demo_fraction <= 0:
                fractions = (1.0, 0.0)
            else:
                fractions = (1.0 - demo_fraction, demo_fraction)
            batch = sample_mixed_many([replay, demo], batch_size, utd, fractions=fractions,
                                      frame_features=frame_features)
            new_agent, info = update_agent(agent, batch, utd)
            if not bool(_all_finite((new_agent, info))):  # the divergence guard
                diverged(info)
                continue
            agent = new_agent
            guard["streak"] = 0
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
                scalars["train/updates_per_s"] = (step - window_steps) / max(now - window_t, 1e-9)
                scalars["train/replay_size"] = len(replay)
                scalars["train/demo_size"] = len(demo)
                scalars["train/rejected_messages"] = getattr(server, "num_rejected", 0)
                for key, attr in _SERVER_COUNTERS.items():
                    if key != "transport_items_stored":
                        scalars[f"train/{key}"] = _count(server, attr)
                scalars["train/replay_out_of_bounds"] = replay.num_out_of_bounds
                scalars["train/demo_out_of_bounds"] = demo.num_out_of_bounds
                scalars["train/divergence_recoveries"] = guard["recoveries"]
                scalars["train/divergence_restores"] = guard["restores"]
                scalars["train/hold_wait_s"] = held["wait_s"]
                scalars["train/updates_per_env_step"] = step / max(online.count - training_starts, 1)
                if ext is not None:
                    scalars.update(ext.stats())
                window_t, window_steps = now, step
                logger.log(scalars, step)
                pbar.set_postfix(critic=f"{scalars.get('train/critic_loss', float('nan')):.3g}", replay=len(replay))
            if int(config.learner.checkpoint_period) and step % int(config.learner.checkpoint_period) == 0:
                save()
        publish(force_parts=True)
        save()
        if durable and control.actor_done.is_set():
            # The actor waits for this checkpoint's acknowledgement; serve until it took it.
            wait_s = float(config.learner.get("final_ack_wait_s", 30.0))
            if not control.actor_closed.wait(wait_s):
                tqdm.write(f"[learner] the actor did not confirm the final acknowledgement within {wait_s:g} s")
    finally:
        pbar.close()
        elapsed = time.time() - start
        last = getattr(server, "last_contact_time", None)
        if control.actor_done.is_set():
            actor_status = "done"
        elif not hasattr(server, "last_contact_time"):
            actor_status = "unknown"
        elif last is None:
            actor_status = "never connected"
        else:
            actor_status = "silent" if live["silent"] else "connected"
        summary = {
            "task": config.task,
            "algorithm": config.algorithm,
            "seed": int(config.seed),
            "learner_steps": step,
            "updates_per_s": (step - steps_at_start) / max(elapsed, 1e-9),
            "replay_size": len(replay),
            "demo_size": len(demo),
            "frame_features_computed": replay.feature_calls + demo.feature_calls,
            "frame_feature_bytes_per_frame": max(replay.feature_bytes_per_frame, demo.feature_bytes_per_frame),
            "rejected_messages": int(getattr(server, "num_rejected", 0)),
            "wall_clock_s": elapsed,
            "restored_step": restored_step,
            "restore_report": restore_report,
            "durable_ack": durable,
            "transport_items_received": _count(server, "num_items_inserted") + _count(server, "num_insert_errors"),
        }
        summary.update({key: _count(server, attr) for key, attr in _SERVER_COUNTERS.items()})
        run_counts = run_totals()
        summary.update({
            "transport_items_restored": totals["stored"],
            "transport_items_stored_total": run_counts["stored"],
            "transport_insert_errors_total": run_counts["insert_errors"],
            "replay_out_of_bounds": int(replay.num_out_of_bounds),
            "demo_out_of_bounds": int(demo.num_out_of_bounds),
            "divergence_recoveries": guard["recoveries"],
            "divergence_restores": guard["restores"],
            "actor_status": actor_status,
            "actor_silences": live["silences"],
            "actor_last_contact_age_s": None if last is None else round(time.time() - last, 3),
            "actor_report": dict(control.actor_report),
            "num_actors": num_actors,
            "actors_done": sorted(control.actors_done),
            "actor_reports": {str(k): dict(v) for k, v in sorted(control.actor_reports.items())},
            "fleet": fleet_totals(control.actor_counts, control.num_actors),
            "online_transitions": online.count,
            "updates_per_env_step": step / max(online.count - training_starts, 1),
            "hold_to_actor": hold,
            "hold_wait_s": round(held["wait_s"], 3),
            "hold_waits": held["waits"],
        })
        if ext is not None:
            summary.update({k.replace("/", "_"): v for k, v in ext.stats().items()})
        common.atomic_write_json(summary_path, summary)
        logger.close()
        server.stop()
        checkpointer.close()
    return summary
