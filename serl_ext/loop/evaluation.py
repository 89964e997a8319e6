"""Evaluation: K episodes, each on a freshly built env with a fixed seed, no operator.

Meta-World draws the task variant from the env's own generator, so a second ``reset(seed=s)``
on one env may give another layout (DESIGN.md section 7): fresh envs keep evaluation exact.
Episode ``i`` uses the env seed ``common.eval_seed(config, i)``; stochastic evaluation draws its
actions from a PRNG key derived from that seed, so it is reproducible too.

With one physical arm there is one env: ``run_episodes(..., env=training_env)`` evaluates on
it (``common.eval_on_training_env``; the actor and ``launchers/eval.sh`` do so for ``ur:``
tasks), resetting it with each evaluation seed, its human input switched off
(:func:`human_input_off`).
"""

import contextlib
import logging
import math
import os
import warnings
from typing import Any, Dict, List, Optional

import numpy as np

from serl_ext.loop import common

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def human_input_off(env):
    """Within the block, nobody takes over ``env``: yields the env to evaluate on.

    The simulated operators (``SimulatedOperator``, ``URSimOperator``) and the 4-D devices are
    stepped around (the env below the innermost of them is yielded); the 6-DoF devices
    (``SpaceMouse6Intervention``, ``Keyboard6Intervention``) stay, with ``takeover = False``:
    the policy acts every step and the person's success / failure marks still end the episode
    (a real arm has no success signal of its own). Restored on exit.
    """
    import gymnasium as gym

    from serl_ext.envs.intervention import _Human7Base, _HumanInterventionBase
    from serl_ext.envs.operator import SimulatedOperator
    from serl_ext.envs.ur_tasks import URSimOperator

    target, layer, switched = env, env, []
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, (SimulatedOperator, URSimOperator, _HumanInterventionBase)):
            target, switched = layer.env, []  # everything above it is stepped around
        elif isinstance(layer, _Human7Base):
            switched.append((layer, layer.takeover))
        layer = layer.env
    for wrapper, _ in switched:
        wrapper.takeover = False
    try:
        yield target
    finally:
        for wrapper, before in switched:
            wrapper.takeover = before


def run_episodes(agent, config, num_episodes: int, gate=None, *, stochastic: bool = False,
                 video=None, env=None) -> List[Dict[str, Any]]:
    """Runs ``num_episodes`` evaluation episodes and returns one record per episode.

    Args:
      agent: has ``eval_actions(obs) -> (A,)`` (deterministic: the policy's mode) and, for
        ``stochastic``, ``sample_actions(obs, key) -> (A,)``.
      config: the training config (env, eval seeds).
      num_episodes: K; episode ``i`` runs on a fresh env with seed ``common.eval_seed(config, i)``.
      gate: optional :class:`serl_ext.loop.gate.Gate` between the policy and the env (for a
        method's gate, ``gate.for_evaluation()``: the whole system, policy + gate); reset at each
        episode start. None: the policy alone.
      stochastic: sample actions (key ``PRNGKey(seed)`` folded with the step) instead of the mode.
      video: optional :class:`serl_ext.loop.video.VideoSpec`; its first ``episodes`` episodes
        are filmed (with the gate's :meth:`~serl_ext.loop.gate.Gate.step_info` as a side plot).
      env: None: a fresh env per episode (``common.make_env(..., with_operator=False)``, closed
        after it). An env: every episode runs on it (one arm: the actor's training env),
        reset with the episode's seed, under :func:`human_input_off`; left open, and the
        caller resets it before training on it again.
    Returns:
      ``[{"seed", "success" (bool), "return", "length", "recovery_steps", "video" (path or
      None)}]`` in episode order.
    Raises:
      ValueError / RuntimeError: from the video recorder (bad camera, no rendering).
    """
    if env is not None:
        with human_input_off(env) as eval_env:
            return _run_episodes(agent, config, num_episodes, gate, stochastic, video, eval_env)
    return _run_episodes(agent, config, num_episodes, gate, stochastic, video, None)


def _run_episodes(agent, config, num_episodes, gate, stochastic, video, shared_env):
    import jax

    from serl_ext.loop.gate import RECOVERY

    records = []
    for i in range(num_episodes):
        seed = common.eval_seed(config, i)
        env = shared_env if shared_env is not None else common.make_env(config, seed, with_operator=False)
        recorder = None
        try:
            if video is not None and i < int(video.episodes):
                from serl_ext.loop.video import VideoRecorder

                try:
                    recorder = VideoRecorder(env, video)
                except (RuntimeError, ValueError) as e:
                    if not video.optional:
                        raise
                    _log.warning("episode %d not filmed: %s", i, e)
            key = jax.random.PRNGKey(seed)
            obs, _ = env.reset(seed=seed)
            if gate is not None:
                gate.reset(obs)
            done, ret, length, success, recovery = False, 0.0, 0, False, 0
            while not done:
                if stochastic:
                    action = agent.sample_actions(obs, jax.random.fold_in(key, length))
                else:
                    action = agent.eval_actions(obs)
                action = np.asarray(action, dtype=np.float32)
                source = None
                if gate is not None:
                    action, source = gate.select_action(obs, action)
                if recorder is not None:
                    step_info = getattr(gate, "step_info", None) if gate is not None else None
                    recorder = _film(recorder, step_info() if callable(step_info) else None)
                next_obs, reward, terminated, truncated, info = env.step(action)
                if gate is not None:
                    gate.observe(obs, action, source, reward, next_obs, info)
                recovery += int(source == RECOVERY)
                obs = next_obs
                ret += float(reward)
                length += 1
                success = success or bool(info.get("success", False))
                done = terminated or truncated
            path = None
            recorder = _film(recorder, None) if recorder is not None else None  # the final state
            if recorder is not None:
                path = recorder.write(video.path(i))
        finally:
            if recorder is not None:
                recorder.close()
            if shared_env is None:
                env.close()
        records.append({"seed": int(seed), "success": bool(success), "return": ret, "length": length,
                        "recovery_steps": recovery, "video": path})
    return records


def _film(recorder, step_info):
    """``recorder.frame(step_info)``; an optional video that fails to render is dropped (None)."""
    try:
        recorder.frame(step_info)
    except RuntimeError as e:
        if not recorder.spec.optional:
            raise
        _log.warning("video dropped: %s", e)
        recorder.close()
        return None
    return recorder


def summarize(records: List[Dict[str, Any]], prefix: str = "eval", with_gate: bool = False) -> Dict[str, float]:
    """``{prefix/success_rate, prefix/return, prefix/length}`` (means; SR in [0, 1]) and, with
    ``with_gate``, ``prefix/recovery_fraction`` (share of steps the gate's recovery acted)."""
    lengths = [r["length"] for r in records]
    out = {
        f"{prefix}/success_rate": float(np.mean([r["success"] for r in records])) if records else 0.0,
        f"{prefix}/return": float(np.mean([r["return"] for r in records])) if records else 0.0,
        f"{prefix}/length": float(np.mean(lengths)) if records else 0.0,
    }
    if with_gate:
        out[f"{prefix}/recovery_fraction"] = sum(r["recovery_steps"] for r in records) / max(sum(lengths), 1)
    return out


def confidence_intervals(records: List[Dict[str, Any]], confidence: float = 0.95) -> Dict[str, Any]:
    """Intervals of an evaluation: the success rate's Wilson score interval
    (``scipy.stats.binomtest(...).proportion_ci``) and the mean return's Student-t interval
    (None with fewer than 2 episodes; the point when every return is equal).

    Returns:
      ``{"confidence", "successes", "episodes", "success_rate", "success_rate_ci": [lo, hi],
      "return_mean", "return_ci": [lo, hi] or None, "length_mean"}``.
    """
    from scipy import stats

    from serl_ext.loop.logging import wilson_interval

    n = len(records)
    k = sum(bool(r["success"]) for r in records)
    returns = np.array([r["return"] for r in records], dtype=np.float64)
    return_ci = None
    if n >= 2:
        sem = float(stats.sem(returns))
        mean = float(returns.mean())
        if sem == 0.0 or not math.isfinite(sem):
            return_ci = [mean, mean]
        else:
            lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
            return_ci = [float(lo), float(hi)]
    return {
        "confidence": confidence,
        "successes": int(k),
        "episodes": int(n),
        "success_rate": k / n if n else 0.0,
        "success_rate_ci": list(wilson_interval(k, n, confidence)),
        "return_mean": float(returns.mean()) if n else 0.0,
        "return_ci": return_ci,
        "length_mean": float(np.mean([r["length"] for r in records])) if n else 0.0,
    }


def evaluate(agent, config, num_episodes: int, gate=None, prefix: str = "eval", *,
             stochastic: bool = False, video=None,
             episode_records: Optional[List[Dict[str, Any]]] = None, env=None) -> Dict[str, float]:
    """Runs :func:`run_episodes` (on ``env`` when given) and returns :func:`summarize` of them
    (deterministic by default).

    Returns:
      ``{prefix/success_rate, prefix/return, prefix/length}`` (floats; SR in [0, 1]) and, with a
      gate, ``prefix/recovery_fraction``. ``episode_records``, when a list, receives the
      per-episode records (video paths included).
    """
    records = run_episodes(agent, config, num_episodes, gate, stochastic=stochastic, video=video, env=env)
    if episode_records is not None:
        episode_records.extend(records)
    return summarize(records, prefix, with_gate=gate is not None)


_RENDERING_PROBLEM: Dict[str, Optional[str]] = {}


def training_video_spec(config, run_dir: str, eval_index: int, env_steps: int, name: str = "eval"):
    """The :class:`~serl_ext.loop.video.VideoSpec` of the actor's ``eval_index``-th evaluation
    (0-based), or None: videos are filmed at every ``logging.video_period``-th evaluation (0:
    never) into ``{run_dir}/videos/{name}_{env_steps:08d}_ep{i}.mp4``. When rendering is not
    available (probed once per process) or imageio-ffmpeg is missing, a warning is logged once
    and no video is filmed; training goes on."""
    period = int(config.logging.get("video_period", 0))
    if period <= 0 or eval_index % period:
        return None
    if "problem" not in _RENDERING_PROBLEM:
        from serl_ext.envs import check_rendering

        with warnings.catch_warnings():  # the probe's subprocess: fork + exec at once, no JAX in the child
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            problem = check_rendering()
        if problem is None:
            try:
                import imageio_ffmpeg  # noqa: F401
            except ImportError:
                problem = "imageio-ffmpeg is not installed (pip install -e '.[video]')"
        _RENDERING_PROBLEM["problem"] = problem
        if problem:
            _log.warning("evaluation videos off: %s", problem)
    if _RENDERING_PROBLEM["problem"]:
        return None
    from serl_ext.loop.video import spec_from_config

    import dataclasses

    spec = spec_from_config(config, os.path.join(run_dir, "videos"), f"{name}_{int(env_steps):08d}")
    return dataclasses.replace(spec, optional=True)
