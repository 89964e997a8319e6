"""A reset the env refuses until a person acts (serl_ext.errors.ResetBlockedError: an emergency or
protective stop on a UR arm) is waited out and retried: the wrapper by itself on a fake clock,
on the UR env with fake ur_rtde interfaces, and in the actor, which keeps delivering meanwhile."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest

from serl_ext.envs.wrappers import WaitWhileResetBlocked
from serl_ext.errors import ResetBlockedError


class FakeTime:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def now(self):
        return self.t

    def sleep(self, dt):
        self.sleeps.append(dt)
        self.t += dt


class BlockedUntil(gym.Env):
    """Resets raise ResetBlockedError while ``clock() < free_at`` (or ``error`` once, if given)."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, clock, free_at, error=None):
        self.clock, self.free_at, self.error = clock, free_at, error
        self.attempts = []

    def reset(self, *, seed=None, options=None):
        self.attempts.append(self.clock())
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if self.clock() < self.free_at:
            raise ResetBlockedError("protective stop is active: unlock it on the pendant")
        return np.zeros(2, np.float32), {"seed": seed}


def test_the_wrapper_retries_at_its_period_keeps_calling_back_and_counts():
    fake = FakeTime()
    env = BlockedUntil(fake.now, free_at=12.0)
    calls, notes = [], []
    wrapped = WaitWhileResetBlocked(env, retry_s=5.0, timeout_s=100.0, while_waiting=lambda: calls.append(fake.t),
                                    notify=notes.append, clock=fake.now, sleep=fake.sleep)
    obs, info = wrapped.reset(seed=3)
    assert info == {"seed": 3} and obs.shape == (2,)
    assert env.attempts == pytest.approx([0.0, 5.0, 10.0, 15.0])  # every retry_s until free at 12
    assert max(fake.sleeps) <= 0.1 + 1e-9 and len(calls) >= 3 * 50  # called back every 0.1 s
    assert wrapped.blocked_resets == 1 and wrapped.last_wait_s == pytest.approx(15.0)
    assert "protective stop" in notes[0] and "giving up in 100 s" in notes[0]
    assert notes[-1] == "reset went through after 15 s blocked"
    # An unblocked reset waits for nothing; the totals add up over resets.
    wrapped.reset()
    assert wrapped.last_wait_s == 0.0 and wrapped.blocked_resets == 1 and wrapped.waited_s == pytest.approx(15.0)


def test_the_wrapper_gives_up_after_its_timeout_and_passes_other_errors_through():
    fake = FakeTime()
    env = BlockedUntil(fake.now, free_at=float("inf"))
    wrapped = WaitWhileResetBlocked(env, retry_s=2.0, timeout_s=7.0, clock=fake.now, sleep=fake.sleep)
    with pytest.raises(RuntimeError, match=r"still blocked after 8 s .*unlock it on the pendant") as caught:
        wrapped.reset()
    assert isinstance(caught.value.__cause__, ResetBlockedError)
    assert env.attempts == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])
    env = BlockedUntil(fake.now, free_at=0.0, error=TimeoutError("home pose not reached"))
    wrapped = WaitWhileResetBlocked(env, clock=fake.now, sleep=fake.sleep)
    with pytest.raises(TimeoutError, match="home pose"):
        wrapped.reset()
    assert len(env.attempts) == 1  # not retried: only a blocked reset is
    for bad in (dict(retry_s=0.0), dict(retry_s=-1.0), dict(timeout_s=-1.0), dict(retry_s=float("nan"))):
        with pytest.raises(ValueError):
            WaitWhileResetBlocked(env, **bad)


def test_a_protective_stop_on_the_ur_arm_is_waited_out_until_the_person_unlocks_it():
    from test_ur import action, make

    from serl_ext.robots import safety
    from serl_ext.robots.ur import SafetyStopError

    assert issubclass(SafetyStopError, ResetBlockedError) and issubclass(SafetyStopError, RuntimeError)
    env, arm, clock = make()
    try:
        env.reset(seed=0)
        arm.protective_stopped = True
        assert env.step(action(x=0.5))[3]  # the stop ends the episode
        unlock_at = clock.now() + 12.0
        attempts = []

        def person():  # unlocks the stop on the pendant after 12 s (simulated time)
            if clock.now() >= unlock_at:
                arm.protective_stopped = False

        inner_reset = env.reset

        def counted_reset(**kwargs):
            attempts.append(clock.now())
            return inner_reset(**kwargs)

        env.reset = counted_reset
        notes = []
        wrapped = WaitWhileResetBlocked(env, retry_s=5.0, timeout_s=60.0, while_waiting=person,
                                        notify=notes.append, clock=clock.now, sleep=clock.advance)
        wrapped.reset(seed=0)
        assert len(attempts) == 4 and wrapped.last_wait_s == pytest.approx(15.0, abs=0.2)
        assert "protective stop is active" in notes[0]
        assert env.step(action())[4]["safety_status"] == safety.OK
    finally:
        env.close()


def test_the_actor_waits_out_a_blocked_reset_delivering_its_queue_and_goes_on(tmp_path, monkeypatch):
    from configs.train import get_config
    from serl_ext.loop import common
    from serl_ext.loop.actor import DATA_STORE, run_actor
    from test_loop import FakeClient, small_actor_settings

    config = small_actor_settings(get_config("pick-place,hil_serl"), tmp_path, 50)
    config.env.max_episode_steps = 20
    config.actor.blocked_reset_retry_s = 0.05
    make_env = common.make_env
    clients, seen_while_blocked = [], []

    class StopAtSecondReset(gym.Wrapper):
        """The second training reset is refused three times (a protective stop)."""

        def __init__(self, env):
            super().__init__(env)
            self.resets, self.refusals = 0, 0

        def reset(self, **kwargs):
            self.resets += 1
            if self.resets in (2, 3, 4):
                self.refusals += 1
                seen_while_blocked.append(len(clients[0].received[DATA_STORE]))
                raise ResetBlockedError("protective stop is active: unlock it on the pendant")
            return self.env.reset(**kwargs)

    envs = []

    def blocking_make_env(config, seed, *, with_operator):
        env = make_env(config, seed, with_operator=with_operator)
        if with_operator:
            envs.append(StopAtSecondReset(env))
            return envs[-1]
        return env

    monkeypatch.setattr(common, "make_env", blocking_make_env)
    summary = run_actor(config, make_client=lambda stores: clients.append(FakeClient(stores)) or clients[0])
    assert summary["env_steps"] == 50 and envs[0].refusals == 3
    # The first episode's 20 transitions were all delivered while the reset was blocked (its last
    # one is queued at the episode end, so the first refusal may still see 19).
    assert seen_while_blocked[0] >= 19 and seen_while_blocked[-1] == 20
    assert len(clients[0].received[DATA_STORE]) == 50
    rows = [json.loads(line) for line in open(os.path.join(common.run_dir_for(config), "metrics", "actor.jsonl"))]
    blocked = [r for r in rows if "rollout/reset_blocked_s" in r]
    assert len(blocked) == 1 and blocked[0]["rollout/reset_blocked_s"] >= 3 * 0.05
    assert blocked[0]["rollout/blocked_resets"] == 1
