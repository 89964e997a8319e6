"""Deterministic evaluation: K episodes, each on a freshly built env with a fixed seed.

Meta-World draws the task variant from the env's own generator, so a second ``reset(seed=s)``
on one env may give another layout (DESIGN.md section 7): fresh envs keep evaluation exact.
"""

from typing import Dict

import numpy as np

from serl_ext.loop import common


def evaluate(agent, config, num_episodes: int, gate=None, prefix: str = "eval") -> Dict[str, float]:
    """Runs ``num_episodes`` deterministic episodes (``agent.eval_actions``), no operator.

    Args:
      agent: has ``eval_actions(obs) -> (A,)``.
      config: the training config (env, eval seeds).
      num_episodes: episodes, each on a freshly built env with ``common.eval_seed(config, i)``.
      gate: optional :class:`serl_ext.loop.gate.Gate` between the policy and the env (for
        a method's gate, ``gate.for_evaluation()``: the whole system, policy + gate);
        reset at each episode start. None: the policy alone.
      prefix: key prefix of the returned metrics.
    Returns:
      ``{prefix/success_rate, prefix/return, prefix/length}`` (floats; SR in [0, 1]) and, with a
      gate, ``prefix/recovery_fraction`` (share of steps the gate's recovery acted).
    """
    from serl_ext.loop.gate import POLICY, RECOVERY

    successes, returns, lengths, recovery = [], [], [], 0
    for i in range(num_episodes):
        seed = common.eval_seed(config, i)
        env = common.make_env(config, seed, with_operator=False)
        try:
            obs, _ = env.reset(seed=seed)
            if gate is not None:
                gate.reset(obs)
            done, ret, length, success = False, 0.0, 0, False
            while not done:
                action = np.asarray(agent.eval_actions(obs), dtype=np.float32)
                source = POLICY
                if gate is not None:
                    action, source = gate.select_action(obs, action)
                next_obs, reward, terminated, truncated, info = env.step(action)
                if gate is not None:
                    gate.observe(obs, action, source, reward, next_obs, info)
                recovery += int(source == RECOVERY)
                obs = next_obs
                ret += float(reward)
                length += 1
                success = success or bool(info.get("success", False))
                done = terminated or truncated
        finally:
            env.close()
        successes.append(success)
        returns.append(ret)
        lengths.append(length)
    out = {
        f"{prefix}/success_rate": float(np.mean(successes)) if successes else 0.0,
        f"{prefix}/return": float(np.mean(returns)) if returns else 0.0,
        f"{prefix}/length": float(np.mean(lengths)) if lengths else 0.0,
    }
    if gate is not None:
        out[f"{prefix}/recovery_fraction"] = recovery / max(sum(lengths), 1)
    return out
