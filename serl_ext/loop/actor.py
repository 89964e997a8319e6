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

Outputs in the run folder: ``summary.json``, ``actor_state.json`` (resume point, written at
every episode end), ``metrics/actor.jsonl`` and ``tb/actor`` (rollout/, intervention/, eval/,
gate/), ``actor_config.json``.
"""

import collections
import logging
import os
import threading
import time
from typing import Any, Dict, Optional

import jax
import numpy as np
from tqdm import tqdm

from serl_ext.loop import common, components
from serl_ext.loop.common import DATA_STORE, INTERVENTION_STORE, transport_config  # noqa: F401
from serl_ext.loop.evaluation import evaluate
from serl_ext.loop.gate import HUMAN, RECOVERY
from serl_ext.loop.logging import MetricLogger
from serl_ext.loop.param_message import MessageError, check_message

log = logging.getLogger(__name__)


class ParameterSlot:
    """Holds the newest parameter message from the learner; written by the transport thread,
    read by the actor loop between steps (so a swap never happens in the middle of a step)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: Optional[Dict[str, Any]] = None
        self.last_receive_time = 0.0
        self.learner_step = 0
        self.version = -1

    def put(self, message: Dict[str, Any]) -> None:
        with self._lock:
            self._pending = message
            self.last_receive_time = time.time()
            step = message.get("learner_step") if isinstance(message, dict) else None
            if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
                self.learner_step = int(step)  # the message itself is checked when it is taken

    def take(self) -> Optional[Dict[str, Any]]:
        with self._lock:
            message, self._pending = self._pending, None
            return message


def _initial_state() -> Dict[str, Any]:
    return {
        "env_steps": 0,
        "episodes": 0,
        "human_steps": 0,
        "recovery_steps": 0,
        "wall_clock_s": 0.0,
        "eval_history": [],
        "successes": 0,
    }


def run_actor(config, gate=None, make_client=None) -> Dict[str, Any]:
    """Runs the actor until ``config.actor.max_env_steps`` agent steps; returns the summary.

    Args:
      config: the composed training config (configs/train.py).
      gate: an object with the :class:`serl_ext.loop.gate.Gate` interface (default: built by
        :func:`serl_ext.loop.components.make_gate` from ``config.components.gate``; a
        :class:`~serl_ext.loop.gate.PassThroughGate` for plain HiL-SERL).
      make_client: ``make_client(data_stores) -> client`` with the TrainerClient interface
        (``update``, ``request``, ``recv_network_callback``, ``stop``); default: a
        :class:`serl_ext.transport.TrainerClient` connecting to ``config.transport.ip``. Tests
        pass an in-process fake.
    """
    bootstrap_at_limit = bool(config.actor.get("bootstrap_at_time_limit", True))
    from serl_ext.transport import QueuedDataStore, TrainerClient

    run_dir = common.run_dir_for(config)
    os.makedirs(run_dir, exist_ok=True)
    common.write_config(run_dir, config, "actor")
    state_path = os.path.join(run_dir, "actor_state.json")
    state = common.read_json(state_path) or _initial_state()
    if state["env_steps"]:
        log.info("resuming actor from %s at env step %d", state_path, state["env_steps"])

    env = common.make_env(config, common.episode_seed(config, state["episodes"]), with_operator=True)
    spec = common.observation_spec(env)
    action_dim = int(env.action_space.shape[0])
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
    slot = ParameterSlot()
    if make_client is None:
        client = TrainerClient(
            "actor", config.transport.ip, transport_config(config), data_stores=stores, wait_for_server=False
        )
    else:
        client = make_client(stores)
    client.recv_network_callback(slot.put)
    logger = MetricLogger(run_dir, "actor", tensorboard=config.logging.tensorboard)

    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), state["env_steps"] + 1)
    max_steps = int(config.actor.max_env_steps)
    start_time = time.time()
    wall_offset = float(state["wall_clock_s"])
    param_version, param_errors = -1, 0
    recent_success = collections.deque(maxlen=20)
    latencies = collections.deque(maxlen=1000)  # policy + gate (s)
    step_latencies = collections.deque(maxlen=1000)  # policy + gate + env.step (s)
    throttle_wait_s = 0.0

    def wall_clock():
        return wall_offset + time.time() - start_time

    def run_eval():
        metrics = evaluate(agent, config, int(config.actor.eval_episodes))
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
            sys_metrics = evaluate(agent, config, int(config.actor.eval_episodes), gate=gate.for_evaluation(),
                                   prefix="eval_system")
            metrics.update(sys_metrics)
            entry["system_success_rate"] = sys_metrics["eval_system/success_rate"]
            entry["system_recovery_fraction"] = sys_metrics["eval_system/recovery_fraction"]
            system = (f", with the gate SR {entry['system_success_rate']:.2f} "
                      f"(recovery {entry['system_recovery_fraction']:.2f} of steps)")
        state["eval_history"].append(entry)
        logger.log(metrics, state["env_steps"])
        tqdm.write(
            f"[actor] eval at {state['env_steps']} env steps: SR {metrics['eval/success_rate']:.2f}{system} "
            f"(learner step {slot.learner_step}, {wall_clock() / 60:.1f} min)"
        )

    def swap_params():
        nonlocal agent, param_version, param_errors
        message = slot.take()
        if message is None:
            return
        try:
            # Schema, agent tree/shapes/dtypes, finiteness of everything, known parts only.
            checked = check_message(message, params_template=agent.policy_params(),
                                    accepted_parts=(gate_part,) if gate_part else ())
            new_agent = agent.load_policy_params(checked.params)
            if gate_part in checked.parts:
                gate.load_params(checked.parts[gate_part])  # validated first; raises leaving it unchanged
            agent = new_agent
            param_version = checked.version
        except (MessageError, ValueError, TypeError, KeyError) as e:
            param_errors += 1
            log.warning("rejected parameter message: %s", e)

    def throttled() -> bool:
        ratio = float(config.actor.steps_per_update)
        if ratio <= 0:
            return False
        if time.time() - slot.last_receive_time > float(config.actor.learner_timeout_s):
            return False  # Learner away (or not started): keep acting with the last parameters.
        allowed = (
            int(config.learner.training_starts) + ratio * slot.learner_step + int(config.actor.throttle_slack)
        )
        return state["env_steps"] >= allowed

    recorder, writer = None, None
    if config.actor.save_episodes:
        from serl_ext.data.episodes import EpisodeRecorder, EpisodeWriter

        writer = EpisodeWriter(os.path.join(run_dir, "episodes"), prefix="rollout")
        recorder = EpisodeRecorder()

    wait_s = float(config.actor.get("wait_for_learner_s", 0.0))
    if float(config.actor.steps_per_update) > 0 and wait_s > 0:
        # With the throttle on, start acting only once the learner is up (it may spend a while
        # loading demos or pretraining), so every method starts from the same data/update ratio.
        tqdm.write(f"[actor] waiting up to {wait_s:.0f} s for the learner's first parameters")
        deadline = time.time() + wait_s
        while time.time() < deadline and slot.last_receive_time == 0.0:
            client.update()
            time.sleep(0.05)
    obs, _ = env.reset(seed=common.episode_seed(config, state["episodes"]))
    gate.reset(obs)
    if recorder is not None:
        recorder.reset(obs)
    ep = dict(ret=0.0, length=0, human=0, recovery=0, segments=0, success=False, prev_human=False)
    pbar = tqdm(
        total=max_steps, initial=min(state["env_steps"], max_steps), desc="actor env steps",
        disable=not config.logging.progress_bar, dynamic_ncols=True,
    )
    try:
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
            action, source = gate.select_action(obs, policy_action)
            latencies.append(time.perf_counter() - t0)

            next_obs, reward, terminated, truncated, info = env.step(action)
            step_latencies.append(time.perf_counter() - t0)
            if "intervene_action" in info:
                action, source = np.asarray(info["intervene_action"], dtype=np.float32), HUMAN
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
                "grasp_penalty": common.grasp_penalty(info),
            }
            stores[DATA_STORE].insert(transition)
            if recorder is not None:
                recorder.step(
                    transition["actions"], reward, next_obs, terminated, truncated,
                    intervention=transition["interventions"], action_source=source,
                    success=bool(info.get("success", False)), grasp_penalty=transition["grasp_penalty"],
                )
            if source in to_intervention_store:
                stores[INTERVENTION_STORE].insert(transition)

            human = source == HUMAN
            ep["ret"] += float(reward)
            ep["length"] += 1
            ep["human"] += int(human)
            ep["recovery"] += int(source == RECOVERY)
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
                    "rollout/param_errors": param_errors,
                    "rollout/dropped_transitions": sum(s.num_dropped for s in stores.values()),
                    "rollout/policy_latency_ms": 1e3 * float(np.mean(latencies)) if latencies else 0.0,
                    "rollout/step_latency_ms": 1e3 * float(np.mean(step_latencies)) if step_latencies else 0.0,
                    "rollout/throttle_wait_s": throttle_wait_s,
                    "intervention/steps": ep["human"],
                    "intervention/segments": ep["segments"],
                    "intervention/episode_rate": ep["human"] / max(ep["length"], 1),
                    "intervention/rate": ir,
                    "intervention/recovery_steps": ep["recovery"],
                }
                scalars.update({f"gate/{k}": v for k, v in gate.stats().items()})
                logger.log(scalars, state["env_steps"])
                pbar.set_postfix(SR20=f"{np.mean(recent_success):.2f}", IR=f"{ir:.3f}", learner=slot.learner_step)
                state["wall_clock_s"] = wall_clock()
                common.atomic_write_json(state_path, state)
                if recorder is not None:
                    writer.write(recorder.finish({
                        "task": config.task, "seed": common.episode_seed(config, state["episodes"] - 1),
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
                obs, _ = env.reset(seed=common.episode_seed(config, state["episodes"]))
                gate.reset(obs)
                if recorder is not None:
                    recorder.reset(obs)
                ep = dict(ret=0.0, length=0, human=0, recovery=0, segments=0, success=False, prev_human=False)

            if int(config.actor.eval_period) and state["env_steps"] % int(config.actor.eval_period) == 0:
                run_eval()

        swap_params()
        if not state["eval_history"] or state["eval_history"][-1]["env_steps"] != state["env_steps"]:
            run_eval()
        # Deliver what is still queued (bounded), then tell the learner we are done.
        deadline = time.time() + 30.0
        while time.time() < deadline and any(len(s) for s in stores.values()):
            client.update()
            time.sleep(0.05)
        client.request("actor_done", {"env_steps": state["env_steps"]})
    finally:
        pbar.close()
        state["wall_clock_s"] = wall_clock()
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
    return summary


def write_summary(config, run_dir: str, state: Dict[str, Any], learner_step: int) -> Dict[str, Any]:
    """Writes ``{run_dir}/summary.json`` (the fields every run reports) and returns it."""
    history = state["eval_history"]
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
    }
    summary.update(state.get("gate", {}))
    common.atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    return summary
