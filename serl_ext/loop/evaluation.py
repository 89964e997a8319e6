"""Deterministic evaluation: K episodes, each on a freshly built env with a fixed seed.

Meta-World draws the task variant from the env's own generator, so a second ``reset(seed=s)``
on one env may give another layout (DESIGN.md section 7): fresh envs keep evaluation exact.
"""

from typing import Dict

import numpy as np

from serl_ext.loop import common


def evaluate(agent, config, num_episodes: int) -> Dict[str, float]:
    """Runs ``num_episodes`` deterministic episodes (``agent.eval_actions``), no operator.

    Returns:
      ``{"eval/success_rate", "eval/return", "eval/length"}`` (floats; SR in [0, 1]).
    """
    successes, returns, lengths = [], [], []
    for i in range(num_episodes):
        seed = common.eval_seed(config, i)
        env = common.make_env(config, seed, with_operator=False)
        try:
            obs, _ = env.reset(seed=seed)
            done, ret, length, success = False, 0.0, 0, False
            while not done:
                action = np.asarray(agent.eval_actions(obs), dtype=np.float32)
                obs, reward, terminated, truncated, info = env.step(action)
                ret += float(reward)
                length += 1
                success = success or bool(info.get("success", False))
                done = terminated or truncated
        finally:
            env.close()
        successes.append(success)
        returns.append(ret)
        lengths.append(length)
    return {
        "eval/success_rate": float(np.mean(successes)) if successes else 0.0,
        "eval/return": float(np.mean(returns)) if returns else 0.0,
        "eval/length": float(np.mean(lengths)) if lengths else 0.0,
    }
