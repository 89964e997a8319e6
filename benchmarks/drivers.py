"""Drivers that act on every step the simulated operator does not control, and the loop that
measures the operator's intervention rate under them (benchmarks/recovery_bound.py,
benchmarks/recovery_goals.py)."""

import collections

import numpy as np


def drive(config, driver, episodes: int):
    """Runs ``episodes`` episodes; ``driver(obs, env, t_in_chunk) -> action``. Returns metrics.

    ``ir`` is operator steps / all steps pooled over the episodes (the definition the online runs
    and ``compare.py`` use, so long operator-rescued episodes weigh more than short autonomous
    ones); ``ir_episode_mean`` is the mean of the per-episode ratios, and ``autonomous_rate`` the
    fraction of episodes with no operator step.
    """
    from serl_ext.loop import common

    reasons, irs, successes = collections.Counter(), [], []
    human_total = steps_total = 0
    for i in range(episodes):
        seed = 50_000 + i
        env = common.make_env(config, seed, with_operator=True)
        try:
            obs, _ = env.reset(seed=seed)
            driver.reset()
            human = steps = 0
            success = False
            while True:
                action = driver.act(obs, env)
                obs, _, terminated, truncated, info = env.step(action)
                steps += 1
                if "intervene_action" in info:
                    human += 1
                    driver.interrupted()
                    if info.get("operator/trigger"):
                        reasons[str(info["operator/trigger"])] += 1
                success = success or bool(info.get("success", False))
                if terminated or truncated:
                    break
            irs.append(human / steps)
            human_total += human
            steps_total += steps
            successes.append(success)
        finally:
            env.close()
    return {"ir": human_total / max(steps_total, 1), "ir_episode_mean": float(np.mean(irs)),
            "autonomous_rate": float(np.mean([x == 0 for x in irs])), "ir_per_episode": [round(x, 3) for x in irs],
            "success_rate": float(np.mean(successes)), "takeover_step_reasons": dict(reasons)}


class RecoveryDriver:
    def __init__(self, models, replan_every: int):
        self.models, self.replan_every = models, replan_every

    def reset(self):
        self.chunk, self.goal, self.k = [], None, 0

    def interrupted(self):
        self.chunk = []

    def act(self, obs, env):
        del env
        if not self.chunk:
            v = self.models.value(obs)
            self.goal = self.models.goal(obs, v) or obs
            self.k = 0
            self.chunk = list(self.models.chunk(obs, self.goal))
        elif self.k % self.replan_every == 0:
            self.chunk = list(self.models.chunk(obs, self.goal))[: len(self.chunk)]
        self.k += 1
        return np.asarray(self.chunk.pop(0), np.float32)


class ExpertDriver:
    def __init__(self, task, hold: int):
        from serl_ext.loop.rollouts import expert_policy

        self.policy, self.hold = expert_policy(task), hold

    def reset(self):
        self.action, self.left = None, 0

    def interrupted(self):
        self.left = 0

    def act(self, obs, env):
        if self.left == 0:
            self.action, self.left = self.policy(obs, env), self.hold
        self.left -= 1
        return self.action
