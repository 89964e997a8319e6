"""The actor process: acts in the env with the latest pushed parameters, lets the
intervention gate and the (real or simulated) human act on top, and streams transitions to the
learner.

Data flow (HiL-SERL, DESIGN.md section 3): every transition goes to the ``actor_env`` store;
human-controlled transitions also go to ``actor_env_intvn`` (the demo + intervention buffer).
A transition has the house keys plus ``grasp_penalty`` (float32 scalar, ``info["grasp_penalty"]``,
0 when the env has none; ``serl_ext.loop.common.TRANSITION_EXTRAS``).
Parameters arrive on the broadcast socket at any time (``serl_ext/loop/param_message.py``) and
are swapped in atomically between two env steps; a message may also carry a method's part (e.g.
the models and memory of an intervention method) that goes to the gate whose ``part_name`` it is, through the
gate's ``load_params``; a message that fails validation (schema, shapes, NaN) or whose part the
gate refuses is rejected whole and counted in ``rollout/param_errors``. The gate is the one the
algorithm names in ``config.components.gate`` (``serl_ext/loop/components.py``; none: the
pass-through gate of plain HiL-SERL). If the learner goes away the actor keeps acting with its last parameters and keeps
its transitions (``actor.queue_capacity`` unsent transitions; past that the oldest are dropped
and counted in ``rollout/dropped_transitions``) and delivers them once the learner is back.
A transition leaves the queue only once the learner has it in a checkpoint (durable
acknowledgement, ``serl_ext/transport/server.py``), so a learner killed at any moment gets
again what it had not saved. Messages are checked whole on arrival
(:class:`ParameterSlot`); sensor and action faults end the episode instead of the process
(:func:`run_actor`).

Outputs in the run folder: ``summary.json`` (results plus the fault and delivery counters of
:func:`write_summary`), ``actor_state.json`` (resume point, written at every episode end),
``metrics/actor.jsonl`` and ``tb/actor`` (rollout/, intervention/, eval/, gate/, and
selectivity/: the episode's steps by source and recovery / takeover onsets,
``serl_ext/loop/sources.py``), ``actor_config.json``.
"""

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Any, Dict, Optional

import jax
import numpy as np
from tqdm import tqdm

from serl_ext.data._validation import DEFAULT_MAX_ABS, OutOfBoundsError, check_abs_bound
from serl_ext.envs.wrappers import WaitWhileResetBlocked
from serl_ext.loop import common, components, sources
from serl_ext.loop.common import DATA_STORE, INTERVENTION_STORE, transport_config  # noqa: F401
from serl_ext.loop.evaluation import evaluate, training_video_spec
from serl_ext.loop.gate import HUMAN, RECOVERY
from serl_ext.loop.logging import make_logger
from serl_ext.loop.param_message import MessageError, ParameterMessage, check_message

log = logging.getLogger(__name__)


class ParameterSlot:
    """Holds the newest parameter message from the learner; written by the transport thread,
    read by the actor loop between steps (so a swap never happens in the middle of a step).

    :meth:`put` validates the whole message first (:func:`serl_ext.loop.param_message.check_message`:
    schema, counters, the policy tree against ``params_template``, finiteness of every array,
    parts limited to ``accepted_parts``); a refused message stores nothing (neither the
    parameters nor ``learner_step`` / ``version`` / ``last_receive_time``), adds 1 to
    ``num_refused`` and is logged with the reason.

    Args:
      params_template: the actor's ``agent.policy_params()`` (paths, shapes, dtypes the
        message must match); None: any tree.
      accepted_parts: part names someone on the actor takes (None: any name).
    """

    def __init__(self, params_template: Optional[Dict[str, Any]] = None, accepted_parts=None):
        self._lock = threading.Lock()
        self._template = params_template
        self._accepted = None if accepted_parts is None else tuple(accepted_parts)
        self._pending: Optional[ParameterMessage] = None
        self.last_receive_time = 0.0
        self.learner_step = 0
        self.version = -1
        self.num_refused = 0
        self.last_refusal = ""

    def put(self, message: Any) -> None:
        """Checks ``message`` and, if valid, makes it the pending one (never raises)."""
        try:
            checked = check_message(message, params_template=self._template, accepted_parts=self._accepted)
        except MessageError as e:
            with self._lock:
                self.num_refused += 1
                self.last_refusal = str(e)[:500]
            log.warning("refused parameter message (nothing of it applied): %s", e)
            return
        with self._lock:
            self._pending = checked
            self.last_receive_time = time.time()
            self.learner_step = checked.learner_step
            self.version = checked.version

    def take(self) -> Optional[ParameterMessage]:
        """The pending checked message (a :class:`ParameterMessage`) or None; clears it."""
        with self._lock:
            message, self._pending = self._pending, None
            return message


# Delivery counters of summary.json (transport_items_*), summed over actor processes. Items of
# both stores: every transition once in actor_env, human (and gate-chosen) ones again in
# actor_env_intvn.
_DELIVERY_KEYS = ("queued", "sent", "delivered", "acknowledged", "dropped", "unacknowledged")


def _initial_state() -> Dict[str, Any]:
    return {
        "env_steps": 0,
        "episodes": 0,
        "human_steps": 0,
        "recovery_steps": 0,
        "wall_clock_s": 0.0,
        "eval_history": [],
        "successes": 0,
        "sensor_faults": 0,
        "action_faults": 0,
        "fault_resets": 0,
        "transport": {},
        "selectivity": {},  # serl_ext.loop.sources counts summed over episodes (and processes)
        "takeover_causes": {},  # serl_ext.loop.sources.TakeoverCauses: "REASON/ACTOR" -> takeovers
    }


def _note_blocked_reset(message: str) -> None:
    log.warning(message)
    tqdm.write(f"[actor] {message}")


def observation_fault(observation: Dict[str, Any], bounds: Dict[str, Any]) -> Optional[str]:
    """Checks one observation before the policy sees it or it is sent.

    Args:
      observation: ``{key: array}`` from the env.
      bounds: ``{key: |x| bound array or None}`` (``common.value_bounds(env)["observations"]``).
    Returns:
      None when every float entry is finite and within its bound (integer entries, e.g. uint8
      images, are bounded by their dtype); else the reason, naming the key, value and bound.
    """
    for k, value in observation.items():
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            continue
        finite = np.isfinite(arr)
        if not np.all(finite):
            i = tuple(int(j) for j in np.argwhere(~finite)[0]) if arr.ndim else ()
            return f"observations[{k!r}] is {float(arr[i])} at index {i}"
        bound = bounds.get(k)
        if bound is not None:
            try:
                check_abs_bound(arr, bound, f"observations[{k!r}]")
            except OutOfBoundsError as e:
                return str(e)
    return None


def action_fault(action: Any, bound: Any, name: str) -> Optional[str]:
    """None when ``action`` is a finite ``(A,)`` float vector within ``bound`` (the action
    space's, with its margin); else the reason."""
    arr = np.asarray(action)
    shape = np.shape(bound) if bound is not None else arr.shape
    if arr.shape != tuple(shape) or arr.dtype.kind not in "fiu":
        return f"{name} has shape {arr.shape} and dtype {arr.dtype}, expected float {tuple(shape)}"
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        return f"{name} is not finite: {arr.tolist()}"
    if bound is not None:
        try:
            check_abs_bound(arr, bound, name)
        except OutOfBoundsError as e:
            return str(e)
    return None


def _scalar_fault(value: Any, name: str) -> Optional[str]:
    """None for a finite scalar with |value| <= the buffers' default bound, else the reason."""
    v = float(np.asarray(value, dtype=np.float64))
    if not np.isfinite(v) or abs(v) > DEFAULT_MAX_ABS:
        return f"{name} is {v} (not finite or |x| > {DEFAULT_MAX_ABS:g})"
    return None


def run_actor(config, gate=None, make_client=None) -> Dict[str, Any]:
    """Runs the actor until ``config.actor.max_env_steps`` agent steps; returns the summary.

    Several actors (``actor.actor_id`` k of ``learner.num_actors`` N): this actor runs its share
    of the budget (:func:`serl_ext.loop.common.actor_budget`) with its own episode seeds and
    random numbers, keeps to 1/N of the data the learner's steps allow (the throttle), writes its
    files (state, summary, logs, metrics) to :func:`serl_ext.loop.common.actor_dir_for` and talks
    to the learner as ``actor{k}`` (``actor`` for k = 0). Only actor 0 evaluates.

    Sensor faults (issue 15): an observation (after ``reset`` or ``step``) that is not finite or
    lies outside the task's bounds (:func:`serl_ext.loop.common.value_bounds`), a non-finite
    reward or grasp penalty, and a policy, gate or human action that is not finite or outside
    the action bounds, are faults, not crashes: the step is not sent, the episode ends there
    (the last transition sent is marked ``dones=True`` with its mask kept, i.e. truncated; to
    that end each transition is queued one step later, when the next step is known good), a
    ``rollout/sensor_fault`` or ``rollout/action_fault`` event is logged, the env is reset and
    the actor goes on. Counted in ``summary.json`` (``sensor_faults``, ``action_faults``); faulty
    steps are not counted in ``env_steps``; the episode file of a faulted episode is not
    written. ``actor.max_consecutive_faults`` faults in a row stop the actor (RuntimeError).

    Delivery: ``summary.json`` carries ``transport_items_*`` (queued, sent, delivered,
    acknowledged, dropped, unacknowledged) and ``delivered_to_learner``. With the real
    transport, an actor whose transitions never reached a learner raises ``SystemExit`` (after
    writing its summary) so that the process exits non-zero.

    Args:
      config: the composed training config (configs/train.py).
      gate: an object with the :class:`serl_ext.loop.gate.Gate` interface (default: built by
        :func:`serl_ext.loop.components.make_gate` from ``config.components.gate``; a
        :class:`~serl_ext.loop.gate.PassThroughGate` for plain HiL-SERL).
      make_client: ``make_client(data_stores) -> client`` with the TrainerClient interface
        (``update``, ``request``, ``recv_network_callback``, ``stop``); default: a
        :class:`serl_ext.transport.TrainerClient` connecting to ``config.transport.ip``. Tests
        pass an in-process fake.
    Raises:
      RuntimeError: ``actor.max_consecutive_faults`` faults in a row.
      SystemExit: real transport and nothing delivered (see above).
    """
    bootstrap_at_limit = bool(config.actor.get("bootstrap_at_time_limit", True))
    from serl_ext.transport import QueuedDataStore, TrainerClient

    actor_id, num_actors = common.actor_fleet(config)
    primary = actor_id == 0  # the primary actor evaluates; every actor has its own folder
    run_dir = common.actor_dir_for(config)  # this actor's files (the run folder for actor 0)
    os.makedirs(run_dir, exist_ok=True)
    common.write_config(run_dir, config, "actor")
    state_path = os.path.join(run_dir, "actor_state.json")
    state = common.read_json(state_path) or _initial_state()
    for key, value in _initial_state().items():  # actor_state.json of an older version
        state.setdefault(key, value)
    if state["env_steps"]:
        log.info("resuming actor from %s at env step %d", state_path, state["env_steps"])

    env = common.make_env(config, common.episode_seed(config, state["episodes"]), with_operator=True)
    # A reset the env refuses until a person acts (ResetBlockedError: an emergency or protective
    # stop) is retried; while_waiting (set below, once the transport is up) keeps delivering.
    env = WaitWhileResetBlocked(env, retry_s=float(config.actor.get("blocked_reset_retry_s", 5.0)),
                                timeout_s=float(config.actor.get("blocked_reset_timeout_s", 3600.0)),
                                notify=_note_blocked_reset)
    spec = common.observation_spec(env)
    action_dim = int(env.action_space.shape[0])
    bounds = common.value_bounds(env)
    obs_bounds, action_bound = bounds["observations"], bounds.get("actions")
    agent = common.create_agent(config, spec, action_dim)
    if gate is None:
        gate = components.make_gate(config, spec, action_dim, run_dir)
    # The gate's loop options (serl_ext.loop.gate.Gate; duck-typed gates get BaseGate's defaults).
    # Evaluations also run the policy + gate system (no human) when the gate can be copied.
    eval_with_gate = bool(getattr(gate, "eval_with_gate", False)) and hasattr(gate, "for_evaluation")
    # Sources besides HUMAN whose transitions also go to the demo + intervention store.
    to_intervention_store = {HUMAN} | set(getattr(gate, "intervention_sources", ()))
    gate_part = str(getattr(gate, "part_name", "") or "")
    gate_counters = tuple(getattr(gate, "summary_counters", ()))
    # Once per run, after ready_wait_after_episodes episodes, wait at an episode boundary (up to
    # ready_wait_s) for the learner's first ready gate.
    gate_wait_s = float(getattr(gate, "ready_wait_s", 0.0))
    gate_wait_after = int(getattr(gate, "ready_wait_after_episodes", 0)) if gate_wait_s > 0 else 0
    gate_waited = False

    stores = {
        DATA_STORE: QueuedDataStore(config.actor.queue_capacity),
        INTERVENTION_STORE: QueuedDataStore(config.actor.queue_capacity),
    }
    # Messages are checked whole on arrival against the agent's tree and the gate's part name.
    slot = ParameterSlot(agent.policy_params(), accepted_parts=(gate_part,) if gate_part else ())
    real_transport = make_client is None
    if make_client is None:
        client = TrainerClient(
            "actor" if primary else f"actor{actor_id}", config.transport.ip, transport_config(config), data_stores=stores, wait_for_server=False
        )
    else:
        client = make_client(stores)
    client.recv_network_callback(slot.put)
    logger = make_logger(config, run_dir, "actor")

    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), state["env_steps"] + 1)
    if not primary:
        rng = jax.random.fold_in(rng, 1_000_000 + actor_id)
    max_steps = common.actor_budget(config)
    max_faults = max(int(config.actor.get("max_consecutive_faults", 100)), 1)
    selectivity_window = int(config.actor.get("selectivity_window", 10))
    _warn_if_queue_too_small(config, max_steps - state["env_steps"])
    start_time = time.time()
    wall_offset = float(state["wall_clock_s"])
    param_version, param_errors = -1, 0
    recent_success = collections.deque(maxlen=20)
    latencies = collections.deque(maxlen=1000)  # policy + gate (s)
    step_latencies = collections.deque(maxlen=1000)  # policy + gate + env.step (s)
    throttle_wait_s = 0.0
    consecutive_faults = 0
    held = None  # (transition, source): this episode's last transition, queued with the next step

    def wall_clock():
        return wall_offset + time.time() - start_time

    # One arm (actor.eval_on_training_env): evaluate on the training env, between episodes.
    eval_env = env if common.eval_on_training_env(config) else None
    eval_pending = False

    def run_eval():
        videos = []  # evaluation videos (logging.video_period), logged as eval/video, eval_system/video
        spec = training_video_spec(config, run_dir, len(state["eval_history"]), state["env_steps"])
        metrics = evaluate(agent, config, int(config.actor.eval_episodes), video=spec, episode_records=videos,
                           env=eval_env)
        entry = {
            "env_steps": state["env_steps"],
            "wall_clock_s": wall_clock(),
            "learner_step": slot.learner_step,
            "success_rate": metrics["eval/success_rate"],
            "return": metrics["eval/return"],
        }
        system = ""
        if eval_with_gate and getattr(gate, "ready", True):
            # The whole system on the same seeds: base policy + a fresh copy of the gate, no human.
            sys_spec = spec and dataclasses.replace(spec, name=spec.name.replace("eval_", "eval_system_", 1))
            sys_records = []
            sys_metrics = evaluate(agent, config, int(config.actor.eval_episodes), gate=gate.for_evaluation(),
                                   prefix="eval_system", video=sys_spec, episode_records=sys_records,
                                   env=eval_env)
            videos += [dict(r, prefix="eval_system") for r in sys_records]
            metrics.update(sys_metrics)
            entry["system_success_rate"] = sys_metrics["eval_system/success_rate"]
            entry["system_recovery_fraction"] = sys_metrics["eval_system/recovery_fraction"]
            system = (f", with the gate SR {entry['system_success_rate']:.2f} "
                      f"(recovery {entry['system_recovery_fraction']:.2f} of steps)")
        state["eval_history"].append(entry)
        logger.log(metrics, state["env_steps"])
        for record in videos:
            if record["video"]:
                logger.log_video(f"{record.get('prefix', 'eval')}/video", record["video"], state["env_steps"],
                                 fps=spec.fps)
        tqdm.write(
            f"[actor] eval at {state['env_steps']} env steps: SR {metrics['eval/success_rate']:.2f}{system} "
            f"(learner step {slot.learner_step}, {wall_clock() / 60:.1f} min)"
        )

    def swap_params():
        nonlocal agent, param_version, param_errors
        checked = slot.take()  # already checked whole by slot.put
        if checked is None:
            return
        try:
            new_agent = agent.load_policy_params(checked.params)
            if gate_part in checked.parts:
                gate.load_params(checked.parts[gate_part])  # validated first; raises leaving it unchanged
            agent = new_agent
            param_version = checked.version
        except (MessageError, ValueError, TypeError, KeyError) as e:
            param_errors += 1
            log.warning("rejected parameter message: %s", e)

    def while_reset_blocked():
        client.update()  # delivers what is queued, receives parameters
        swap_params()

    env.while_waiting = while_reset_blocked

    def throttled() -> bool:
        ratio = float(config.actor.steps_per_update)
        if ratio <= 0:
            return False
        if time.time() - slot.last_receive_time > float(config.actor.learner_timeout_s):
            return False  # Learner away (or not started): keep acting with the last parameters.
        # With several actors each keeps to its share of the data the learner's steps allow.
        allowed = (
            (int(config.learner.training_starts) + ratio * slot.learner_step) / num_actors
            + int(config.actor.throttle_slack)
        )
        return state["env_steps"] >= allowed

    def queue(transition, source):
        stores[DATA_STORE].insert(transition)
        if source in to_intervention_store:
            stores[INTERVENTION_STORE].insert(transition)

    def flush_held(truncate: bool = False):
        nonlocal held
        if held is not None:
            transition, source = held
            held = None
            if truncate:  # the episode ends here (a fault after it): truncated, mask kept
                transition["dones"] = True
            queue(transition, source)

    def delivery_counters() -> Dict[str, Optional[int]]:
        """This process's counters (client ones None when the client does not keep them)."""
        def client_counter(name):
            value = getattr(client, name, None)
            return int(value) if isinstance(value, (int, np.integer)) else None

        return {
            "queued": sum(s.latest_data_id() + 1 for s in stores.values()),
            "sent": client_counter("num_items_sent"),
            "delivered": client_counter("num_items_delivered"),
            "acknowledged": client_counter("num_items_acknowledged"),
            "dropped": sum(s.num_dropped for s in stores.values()),
            "unacknowledged": sum(len(s) for s in stores.values()),
        }

    def fault(kind: str, reason: str):
        """A sensor or action fault: count, log, end the episode (the caller resets)."""
        nonlocal consecutive_faults
        consecutive_faults += 1
        state[f"{kind}_faults"] += 1
        message = (f"[actor] {kind} fault at env step {state['env_steps']} (episode {state['episodes']}, "
                   f"step {ep['length']}): {reason}; episode truncated, step not sent, resetting")
        log.warning(message)
        tqdm.write(message)
        logger.log({f"rollout/{kind}_fault": 1.0, "rollout/sensor_faults": state["sensor_faults"],
                    "rollout/action_faults": state["action_faults"]}, state["env_steps"])
        if consecutive_faults >= max_faults:
            raise RuntimeError(f"{consecutive_faults} faults in a row without a good step in between (last: "
                               f"{reason}); a sensor or the policy is broken, not glitching "
                               "(actor.max_consecutive_faults)")

    recorder, writer = None, None
    if config.actor.save_episodes:
        from serl_ext.data.episodes import EpisodeRecorder, EpisodeWriter

        writer = EpisodeWriter(os.path.join(run_dir, "episodes"), prefix="rollout")
        recorder = EpisodeRecorder()

    def new_episode_stats():
        return dict(ret=0.0, length=0, human=0, recovery=0, segments=0, success=False, prev_human=False,
                    sources=[], causes={})

    ep = new_episode_stats()
    takeover_causes = sources.TakeoverCauses()
    state.setdefault("takeover_causes", {})  # an actor_state.json written before the counts
    obs = None

    def begin_episode():
        """Resets the env (a faulty first observation is a fault: next seed) and the gate."""
        nonlocal obs, ep
        while True:
            obs, reset_info = env.reset(seed=common.episode_seed(config, state["episodes"] + state["fault_resets"]))
            if reset_info.get("safety/freed_arm", False):  # simulated arm: a force stop the scene reset freed
                state["freed_arm_resets"] = state.get("freed_arm_resets", 0) + 1
                logger.log({"rollout/freed_arm_resets": state["freed_arm_resets"]}, state["env_steps"])
            if env.last_wait_s > 0:
                logger.log({"rollout/reset_blocked_s": env.last_wait_s,
                            "rollout/blocked_resets": env.blocked_resets}, state["env_steps"])
            problem = observation_fault(obs, obs_bounds)
            if problem is None:
                break
            ep = new_episode_stats()
            fault("sensor", f"reset observation: {problem}")
            state["fault_resets"] += 1
        gate.reset(obs)
        takeover_causes.reset()
        if recorder is not None:
            recorder.reset(obs)
        ep = new_episode_stats()

    def end_episode(faulted: bool):
        nonlocal gate_waited
        flush_held(truncate=faulted)
        if faulted and ep["length"] == 0:  # nothing of this episode was sent: try the next seed
            state["fault_resets"] += 1
            begin_episode()
            return
        state["episodes"] += 1
        state["successes"] += int(ep["success"])
        recent_success.append(float(ep["success"]))
        ir = state["human_steps"] / max(state["env_steps"], 1)
        scalars = {
            "rollout/return": ep["ret"],
            "rollout/length": ep["length"],
            "rollout/success": float(ep["success"]),
            "rollout/success_rate_20": float(np.mean(recent_success)),
            "rollout/episodes": state["episodes"],
            "rollout/learner_step": slot.learner_step,
            "rollout/param_version": param_version,
            "rollout/param_errors": param_errors + slot.num_refused,
            "rollout/dropped_transitions": sum(s.num_dropped for s in stores.values()),
            "rollout/sensor_faults": state["sensor_faults"],
            "rollout/action_faults": state["action_faults"],
            "rollout/policy_latency_ms": 1e3 * float(np.mean(latencies)) if latencies else 0.0,
            "rollout/step_latency_ms": 1e3 * float(np.mean(step_latencies)) if step_latencies else 0.0,
            "rollout/throttle_wait_s": throttle_wait_s,
            "intervention/steps": ep["human"],
            "intervention/segments": ep["segments"],
            "intervention/episode_rate": ep["human"] / max(ep["length"], 1),
            "intervention/rate": ir,
            "intervention/recovery_steps": ep["recovery"],
            **{f"intervention/cause/{k}": float(v) for k, v in sorted(ep["causes"].items())},
        }
        counts = sources.source_counts(np.asarray(ep["sources"], np.int8), selectivity_window)
        sources.add_counts(state["selectivity"], counts)
        scalars.update({f"selectivity/{k}": float(v) for k, v in counts.items()})
        scalars.update({f"gate/{k}": v for k, v in gate.stats().items()})
        logger.log(scalars, state["env_steps"])
        pbar.set_postfix(SR20=f"{np.mean(recent_success):.2f}", IR=f"{ir:.3f}", learner=slot.learner_step)
        state["wall_clock_s"] = wall_clock()
        common.atomic_write_json(state_path, state)
        if recorder is not None and not faulted:
            writer.write(recorder.finish({
                "task": config.task, "seed": common.episode_seed(config, state["episodes"] - 1 + state["fault_resets"]),
                "success": bool(ep["success"]), "source": "rollout", "algorithm": config.algorithm,
                "env_steps": state["env_steps"], "param_version": param_version,
            }))
        if (gate_wait_s > 0 and not gate_waited and state["episodes"] >= gate_wait_after
                and not getattr(gate, "ready", True) and slot.last_receive_time > 0):
            gate_waited = True
            t0 = time.time()
            # Stops early when the learner goes away (no message for learner_timeout_s).
            while (time.time() - t0 < gate_wait_s and not gate.ready
                   and time.time() - slot.last_receive_time <= float(config.actor.learner_timeout_s)):
                client.update()  # delivers this episode's transitions, receives the payload
                swap_params()
                time.sleep(0.05)
            state["gate_ready_wait_s"] = round(time.time() - t0, 2)
            tqdm.write(f"[actor] waited {time.time() - t0:.1f} s after {state['episodes']} episodes for the "
                       f"gate ({'ready' if gate.ready else 'not ready, going on without it'})")
        begin_episode()

    wait_s = float(config.actor.get("wait_for_learner_s", 0.0))
    if float(config.actor.steps_per_update) > 0 and wait_s > 0:
        # With the throttle on, start acting only once the learner is up (it may spend a while
        # loading demos or pretraining), so every method starts from the same data/update ratio.
        tqdm.write(f"[actor] waiting up to {wait_s:.0f} s for the learner's first parameters")
        deadline = time.time() + wait_s
        while time.time() < deadline and slot.last_receive_time == 0.0:
            client.update()
            time.sleep(0.05)
    pbar = tqdm(
        total=max_steps, initial=min(state["env_steps"], max_steps), desc="actor env steps",
        disable=not config.logging.progress_bar, dynamic_ncols=True,
    )
    nothing_delivered = False
    try:
        begin_episode()
        while state["env_steps"] < max_steps:
            swap_params()
            if throttled():
                t0 = time.time()
                client.update()
                time.sleep(0.005)
                throttle_wait_s += time.time() - t0
                continue

            t0 = time.perf_counter()
            rng, key = jax.random.split(rng)
            policy_action = np.asarray(agent.sample_actions(obs, key), dtype=np.float32)
            problem = action_fault(policy_action, action_bound, "policy action")
            if problem is None:
                action, source = gate.select_action(obs, policy_action)
                problem = action_fault(action, action_bound, f"action of source {int(source)}")
            if problem is not None:
                fault("action", problem)
                end_episode(faulted=True)
                continue
            latencies.append(time.perf_counter() - t0)

            next_obs, reward, terminated, truncated, info = env.step(action)
            step_latencies.append(time.perf_counter() - t0)
            robot_source = source  # the gate's choice, before a human override
            kind, problem = "sensor", observation_fault(next_obs, obs_bounds) or _scalar_fault(reward, "reward")
            if problem is None:
                try:
                    penalty = common.grasp_penalty(info)
                    problem = _scalar_fault(penalty, "info['grasp_penalty']")
                except ValueError as e:
                    problem = str(e)
            if problem is None and "intervene_action" in info:
                action, source = np.asarray(info["intervene_action"], dtype=np.float32), HUMAN
                kind, problem = "action", action_fault(action, action_bound, "human action")
            if problem is not None:
                fault(kind, problem)
                end_episode(faulted=True)
                continue
            consecutive_faults = 0
            cause = takeover_causes.step(robot_source, source, info)
            if cause is not None:
                ep["causes"][cause] = ep["causes"].get(cause, 0) + 1
                state["takeover_causes"][cause] = state["takeover_causes"].get(cause, 0) + 1
            gate.observe(obs, action, source, reward, next_obs, info)

            transition = {
                "observations": obs,
                "actions": np.asarray(action, dtype=np.float32),
                "next_observations": next_obs,
                "rewards": np.float32(reward),
                "masks": np.float32(0.0 if terminated or (truncated and not bootstrap_at_limit)
                                    else 1.0),
                "dones": bool(terminated or truncated),
                "interventions": bool(source == HUMAN),
                "action_source": np.int8(source),
                # GripperPenalty's cost of the executed gripper command (hybrid agent's critic).
                "grasp_penalty": penalty,
            }
            flush_held()
            if terminated or truncated:
                queue(transition, source)
            else:
                held = (transition, source)
            if recorder is not None:
                recorder.step(
                    transition["actions"], reward, next_obs, terminated, truncated,
                    intervention=transition["interventions"], action_source=source,
                    success=bool(info.get("success", False)), grasp_penalty=transition["grasp_penalty"],
                )

            human = source == HUMAN
            ep["ret"] += float(reward)
            ep["length"] += 1
            ep["human"] += int(human)
            ep["recovery"] += int(source == RECOVERY)
            ep["sources"].append(int(source))
            ep["segments"] += int(human and not ep["prev_human"])
            ep["prev_human"] = human
            ep["success"] = ep["success"] or bool(info.get("success", False))
            state["env_steps"] += 1
            state["human_steps"] += int(human)
            state["recovery_steps"] += int(source == RECOVERY)
            pbar.update(1)
            obs = next_obs

            if state["env_steps"] % int(config.actor.send_period) == 0:
                client.update()

            if terminated or truncated:
                end_episode(faulted=False)

            if primary and int(config.actor.eval_period) and state["env_steps"] % int(config.actor.eval_period) == 0:
                eval_pending = True
            # On the training env an evaluation waits for the end of the training episode, and a
            # new training episode begins after it (the evaluation reset the env).
            if eval_pending and (eval_env is None or terminated or truncated):
                eval_pending = False
                run_eval()
                if eval_env is not None:
                    begin_episode()

        flush_held()
        swap_params()
        if primary and (not state["eval_history"] or state["eval_history"][-1]["env_steps"] != state["env_steps"]):
            run_eval()
        # Deliver what is still queued, tell the learner we are done, then wait for its final
        # checkpoint to acknowledge everything (durable acknowledgement), all within one bound.
        deadline = time.time() + float(config.actor.get("final_ack_timeout_s", 120.0))
        while not client.update() and time.time() < deadline:
            time.sleep(0.05)
        # Its training totals (over restarts) go with it: the learner adds up the fleet's.
        client.request("actor_done", {"actor_id": actor_id, **{k: int(state[k]) for k in common.FLEET_COUNT_KEYS}})
        if hasattr(client, "num_items_acknowledged"):
            while any(len(s) for s in stores.values()) and time.time() < deadline:
                client.update()
                time.sleep(0.05)
            if getattr(client, "last_contact_time", None) is not None:
                client.request("actor_closed", dict(delivery_counters(), actor_id=actor_id))
    finally:
        pbar.close()
        state["wall_clock_s"] = wall_clock()
        if ep["sources"]:  # the episode the step budget cut: its steps are in env_steps too
            try:
                sources.add_counts(state["selectivity"], sources.source_counts(
                    np.asarray(ep["sources"], np.int8), selectivity_window))
            except ValueError as e:
                log.warning("selectivity counts of the last episode skipped: %s", e)
            ep["sources"] = []
        counters = delivery_counters()
        totals = state["transport"]
        for k in _DELIVERY_KEYS:  # summed over actor processes (None: this client keeps none)
            totals[k] = None if counters[k] is None or totals.get(k, 0) is None else totals.get(k, 0) + counters[k]
        for k, v in (("param_messages_received", getattr(client, "num_networks_received", None)),
                     ("param_errors", param_errors + slot.num_refused),
                     ("param_network_refused", _sum_attrs(client, ("num_network_refused",
                                                                   "num_network_unauthenticated",
                                                                   "num_network_replayed")))):
            totals[k] = None if v is None or totals.get(k, 0) is None else totals.get(k, 0) + int(v)
        nothing_delivered = real_transport and counters["queued"] > 0 and not counters["delivered"]
        if counters["unacknowledged"]:
            tqdm.write(f"[actor] {counters['unacknowledged']} queued transitions were not acknowledged as "
                       "checkpointed by the learner (delivered: "
                       f"{counters['delivered']} of {counters['queued']}); they are lost if the learner "
                       "does not save them")
        common.atomic_write_json(state_path, state)
        if hasattr(gate, "close"):
            gate.close()
        gate_totals = gate.summary() if hasattr(gate, "summary") else {}
        state.setdefault("gate", {})
        for k, v in gate_totals.items():  # counters accumulate over actor restarts
            state["gate"][k] = (state["gate"].get(k) or 0) + v if k in gate_counters else v
        common.atomic_write_json(state_path, state)
        summary = write_summary(config, run_dir, state, slot.learner_step)
        logger.close()
        client.stop()
        env.close()
    if nothing_delivered:
        raise SystemExit(
            f"[actor] none of the {summary['transport_items_queued']} queued transitions reached a learner at "
            f"{config.transport.ip}:{config.transport.port} (summary.json delivered_to_learner=false); "
            "start launchers/learner.sh with the same task, ports and key, or check the network"
        )
    return summary


def _sum_attrs(obj, names) -> Optional[int]:
    values = [getattr(obj, n, None) for n in names]
    if any(not isinstance(v, (int, np.integer)) for v in values):
        return None
    return int(sum(values))


def _warn_if_queue_too_small(config, steps_left: int) -> None:
    """Warns when ``actor.queue_capacity`` cannot hold the transitions of one learner checkpoint
    period (the learner acknowledges them only once checkpointed; overflow drops the oldest)."""
    period = int(config.learner.checkpoint_period)
    ratio = float(config.actor.steps_per_update)
    if period > 0 and ratio > 0:
        held = int(period * ratio) + int(config.actor.throttle_slack)
    elif period == 0:
        held = steps_left  # acknowledged only by the learner's final checkpoint
    else:
        return
    if held > int(config.actor.queue_capacity):
        log.warning("actor.queue_capacity=%d may not hold the ~%d transitions the learner acknowledges only "
                    "with its next checkpoint (learner.checkpoint_period=%d); a learner crash could then lose "
                    "the oldest of them", int(config.actor.queue_capacity), held, period)


def write_summary(config, run_dir: str, state: Dict[str, Any], learner_step: int) -> Dict[str, Any]:
    """Writes ``{run_dir}/summary.json`` (the fields every run reports) and returns it.

    Besides the results: ``sensor_faults``, ``action_faults`` (steps refused as faults, see
    :func:`run_actor`), ``transport_items_{queued, sent, delivered, acknowledged, dropped,
    unacknowledged}`` (items of both stores, summed over actor processes; sent counts resends;
    acknowledged: deleted by the actor because the learner has them in a checkpoint;
    unacknowledged: still queued when the actor exited), ``delivered_to_learner`` (False: none
    reached a learner; None: nothing queued or a client without counters),
    ``param_messages_received``, ``param_errors`` (parameter messages refused by the actor's
    checks) and ``param_network_refused`` (refused by the transport: counters, authentication,
    replays).

    Selectivity (:mod:`serl_ext.loop.sources`, every definition there): ``policy_steps``
    (``env_steps - human_steps - recovery_steps``), ``recovery_onsets``, ``takeover_onsets``,
    ``recovery_onsets_followed_by_takeover``, ``takeover_onsets_preceded_by_recovery``,
    ``recovery_runs_ended_by_human`` (ints summed over every episode, the one the step budget cut
    included, and over actor restarts; an episode cut by a kill is lost with its state),
    ``trigger_onset_precision`` (onsets followed by a takeover within N / recovery onsets; None
    without a recovery onset), ``trigger_onset_recall`` (takeovers preceded by an onset within N /
    takeover onsets; None without a takeover) and ``selectivity_window`` (N, env steps,
    ``actor.selectivity_window``). ``takeover_causes``: takeover onsets by ``"REASON/ACTOR"``
    (:class:`serl_ext.loop.sources.TakeoverCauses`: the operator's trigger reason and who acted
    when it noticed it), ``takeovers_noticed_during_recovery`` (the share with ACTOR
    ``recovery``; None without a takeover).
    """
    history = state["eval_history"]
    totals = state.get("transport", {})
    queued, delivered = totals.get("queued", 0), totals.get("delivered")
    summary = {
        "task": config.task,
        "algorithm": config.algorithm,
        "seed": int(config.seed),
        "env_steps": int(state["env_steps"]),
        "episodes": int(state["episodes"]),
        "eval_success_rate": history[-1]["success_rate"] if history else None,
        "best_eval_success_rate": max(h["success_rate"] for h in history) if history else None,
        # policy + the method's gate, no human, same seeds (None: no gate, or not ready then)
        "eval_system_success_rate": history[-1].get("system_success_rate") if history else None,
        "intervention_rate": state["human_steps"] / max(state["env_steps"], 1),
        "human_steps": int(state["human_steps"]),
        "recovery_steps": int(state["recovery_steps"]),
        "train_success_rate": state["successes"] / max(state["episodes"], 1),
        "wall_clock_s": float(state["wall_clock_s"]),
        "learner_steps": int(learner_step),
        "action_repeat": int(config.env.action_repeat),
        "eval_episodes": int(config.actor.eval_episodes),
        "eval_history": history,
        "sensor_faults": int(state.get("sensor_faults", 0)),
        "action_faults": int(state.get("action_faults", 0)),
        # several actors: this actor's index and how many there are (its counts are its own)
        "actor_id": common.actor_fleet(config)[0],
        "num_actors": common.actor_fleet(config)[1],
    }
    for k in _DELIVERY_KEYS:
        summary[f"transport_items_{k}"] = totals.get(k)
    summary["delivered_to_learner"] = None if not queued or delivered is None else delivered > 0
    for k in ("param_messages_received", "param_errors", "param_network_refused"):
        summary[k] = totals.get(k)
    counts = state.get("selectivity", {})
    summary["policy_steps"] = int(state["env_steps"]) - int(state["human_steps"]) - int(state["recovery_steps"])
    for k in sources.EVENT_KEYS:
        summary[k] = int(counts.get(k, 0))
    summary["trigger_onset_precision"], summary["trigger_onset_recall"] = sources.onset_precision_recall(counts)
    summary["selectivity_window"] = int(config.actor.get("selectivity_window", 10))
    causes = {k: int(v) for k, v in sorted(state.get("takeover_causes", {}).items())}
    summary["takeover_causes"] = causes
    summary["takeovers_noticed_during_recovery"] = sources.during_recovery_share(causes)
    summary.update(state.get("gate", {}))
    common.atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary
