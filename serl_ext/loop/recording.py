"""Recording demos by a person: the task env driven from a SpaceMouse or the keyboard, every
accepted episode written as an episode file (``serl_ext/data/episodes.py``) with the keys the
scripted demos have, so that the learner loads both alike (``launchers/record_demos.py``,
``docs/recording_demos.md``).

Per env step the robot's own action is "hold still" (zero motion, the last gripper command
kept); the device's input, when there is any, replaces it (the intervention wrappers of
``serl_ext/envs/intervention.py``: ``KeyboardIntervention`` / ``SpaceMouseIntervention`` on 4-D
Meta-World actions, ``Keyboard6Intervention`` / ``SpaceMouse6Intervention`` on 7-D UR actions).
Keys typed (:data:`MARK_KEYS`; the terminal, the viewer window or a scripted device):

* ``y`` success: the episode ends here (terminal step, reward ``max(reward, success_reward)``)
  and is written as a successful demo;
* ``n`` failure: the episode ends here and is dropped, or written to ``OUT/failures/`` with
  ``keep_failures`` (a folder the learner's demo loading does not read);
* ``x`` re-record: the episode is discarded (no file) and the same scene is reset again;
* ``q`` quit: the unfinished episode is discarded and recording stops.

An episode also ends when the env ends it: a success terminal (the simulator's success flag;
with ``end_on_success`` also a success the env does not terminate on) counts as a success; a
time limit without success as a failure.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

#: Key -> what it does while recording (module docstring).
MARK_KEYS = {"y": "success", "n": "failure", "x": "rerecord", "q": "quit"}
#: Input devices of :func:`wrap_with_device`.
INPUTS = ("keyboard", "spacemouse")
#: Gripper command held before the person gives one, by action size: Meta-World 4-D: -1 (open;
#: 0 would half-close its position-controlled fingers); UR 7-D: 0 (no command, "stay").
INITIAL_GRIPPER = {4: -1.0, 7: 0.0}


class InputExhausted(Exception):
    """A scripted device (:class:`ScriptedInput`) has no more steps: recording ends."""


class KeyTap:
    """A key source that remembers what it returned.

    Wraps ``source`` (callable -> iterable of the characters typed since its last call). The
    intervention wrapper calls the tap (movement keys); the recorder then reads the same keys
    with :meth:`take` (mark keys), so one key stream serves both. ``calls`` counts the calls.
    """

    def __init__(self, source: Callable[[], Iterable[str]]):
        if not callable(source):
            raise TypeError("key source must be callable")
        self.source = source
        self.calls = 0
        self._seen: List[str] = []

    def __call__(self) -> List[str]:
        keys = [str(k) for k in self.source()]
        self.calls += 1
        self._seen.extend(keys)
        return keys

    def take(self) -> List[str]:
        """The keys returned since the last ``take``, in order."""
        out, self._seen = self._seen, []
        return out


class MergedKeys:
    """A key source that concatenates several (e.g. the terminal and the viewer window)."""

    def __init__(self, *sources: Callable[[], Iterable[str]]):
        self.sources = [s for s in sources if s is not None]

    def __call__(self) -> List[str]:
        return [k for s in self.sources for k in s()]


class ScriptedInput:
    """A device that replays a script: stands in for the person in tests and dry runs.

    Each script step is one env step: ``{"motion": up to 6 floats in [-1, 1] (SpaceMouse
    translation xyz, rotation), "buttons": [int, ...] (SpaceMouse: 0 close, 1 open),
    "keys": str (characters typed: movement keys for the keyboard, mark keys)}``; missing
    entries mean no input. Both channels, ``get_action()`` (the SpaceMouse's) and ``keys()``
    (a key source), have their own cursor and advance one step per call; each is called once
    per env step, so they stay in step.

    Args:
      steps: the script (sequence of dicts, see above).

    Raises:
      ValueError: a malformed step (unknown entries, motion of more than 6 values or non-finite).
      InputExhausted: from ``get_action()`` / ``keys()`` once past the last step.
    """

    def __init__(self, steps: Sequence[Dict[str, Any]]):
        self.steps = []
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                raise ValueError(f"script step {i} must be a dict, got {type(step).__name__}")
            unknown = set(step) - {"motion", "buttons", "keys"}
            if unknown:
                raise ValueError(f"script step {i}: unknown entries {sorted(unknown)} "
                                 "(expected motion, buttons, keys)")
            motion = np.zeros(6, np.float32)
            given = np.asarray(step.get("motion", []), np.float32).reshape(-1)
            if given.size > 6 or not np.all(np.isfinite(given)):
                raise ValueError(f"script step {i}: motion must be at most 6 finite values, got {given}")
            motion[: given.size] = given
            buttons = [int(b) for b in step.get("buttons", [])]
            keys = str(step.get("keys", ""))
            self.steps.append((motion, buttons, keys))
        self._action_cursor = 0
        self._key_cursor = 0

    @classmethod
    def from_json(cls, path: str) -> "ScriptedInput":
        """Reads a script from a JSON file holding a list of steps (or ``{"steps": [...]}``).

        Raises:
          FileNotFoundError, ValueError: no such file, not JSON, a malformed step.
        """
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            data = data.get("steps")
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of steps or {{\"steps\": [...]}}")
        return cls(data)

    def get_action(self):
        """``(motion float32 (6,), buttons list[int])`` of the next step."""
        if self._action_cursor >= len(self.steps):
            raise InputExhausted("the script has no more steps")
        motion, buttons, _ = self.steps[self._action_cursor]
        self._action_cursor += 1
        return motion.copy(), [*buttons, 0, 0]

    def keys(self) -> List[str]:
        """The characters of the next step."""
        if self._key_cursor >= len(self.steps):
            raise InputExhausted("the script has no more steps")
        keys = self.steps[self._key_cursor][2]
        self._key_cursor += 1
        return list(keys)

    def __call__(self) -> List[str]:
        return self.keys()


def wrap_with_device(env, input_kind: str, tap: KeyTap, device=None):
    """``env`` behind the person's device.

    Args:
      env: a task env with Box actions of size 4 (Meta-World) or 7 (UR arm).
      input_kind: ``"keyboard"`` (``tap`` gives the movement keys) or ``"spacemouse"``
        (``device.get_action()``; ``tap`` gives the mark keys, and on 7-D envs also goes to
        ``SpaceMouse6Intervention`` for its y / n marks).
      tap: the recorder's :class:`KeyTap`.
      device: a SpaceMouse-like object (``get_action() -> (motion, buttons)``); None opens
        ``serl_ext.robots.spacemouse.SpaceMouse`` (spacemouse only).

    Raises:
      ValueError: unknown ``input_kind`` or an action size other than 4 or 7.
      ImportError: a SpaceMouse is needed and pyspacemouse is missing.
    """
    from serl_ext.envs import intervention

    if input_kind not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {input_kind!r}")
    dim = int(np.prod(env.action_space.shape))
    if dim not in (4, 7):
        raise ValueError(f"recording needs a 4-D (Meta-World) or 7-D (UR arm) action, got {dim}-D; "
                         "for other envs record episodes yourself (serl_ext.data.episodes.EpisodeRecorder)")
    if input_kind == "keyboard":
        cls = intervention.KeyboardIntervention if dim == 4 else intervention.Keyboard6Intervention
        return cls(env, key_source=tap)
    if dim == 4:
        return intervention.SpaceMouseIntervention(env, device=device)
    return intervention.SpaceMouse6Intervention(env, device=device, key_source=tap)


@dataclass
class RecordReport:
    """What a recording session did.

    Attributes:
      written: paths of the successful demos written (in order).
      failures_written: paths written to ``OUT/failures/`` (``keep_failures``).
      failures_dropped: failed episodes not written.
      rerecorded: episodes discarded with the re-record key.
      ended_by: ``"done"`` (``num_demos`` reached), ``"quit"`` (the quit key), ``"input_ended"``
        (a scripted device ran out) or ``"max_episodes"``.
      lengths: steps of each written demo.
    """

    written: List[str] = field(default_factory=list)
    failures_written: List[str] = field(default_factory=list)
    failures_dropped: int = 0
    rerecorded: int = 0
    ended_by: str = "done"
    lengths: List[int] = field(default_factory=list)


def _last_mark(keys: Iterable[str], operator_mark: Optional[str]) -> Optional[str]:
    """The mark of one step: quit > re-record > the last of success / failure typed (or the
    7-D wrapper's ``info["operator_mark"]``)."""
    marks = [MARK_KEYS[k.lower()] for k in keys if k.lower() in MARK_KEYS]
    if "quit" in marks:
        return "quit"
    if "rerecord" in marks:
        return "rerecord"
    ends = [m for m in marks if m in ("success", "failure")]
    return ends[-1] if ends else operator_mark


def record_one(env, seed: int, tap: KeyTap, *, end_on_success: bool = True,
               success_reward: Optional[float] = 1.0, step_hz: float = 0.0,
               on_step: Optional[Callable[[Any], None]] = None):
    """Runs one episode of ``env`` (already behind the device, :func:`wrap_with_device`) from
    ``reset(seed=seed)`` and records it.

    Every step is recorded with ``action_source = 2`` (human) and ``interventions = False`` (a
    demo, not a takeover of a running policy), and the extras of the scripted demos:
    ``success`` (bool), ``dense_reward`` (float32), ``grasp_penalty`` (float32).

    Args:
      env: the wrapped env (Box actions of size 4 or 7).
      seed: reset seed.
      tap: the key tap the marks are read from (called here once per step when the wrapper did
        not call it).
      end_on_success: end the episode on the first step whose ``info["success"]`` is true
        even when the env does not terminate there.
      success_reward: the reward of a success-marked step is ``max(reward, success_reward)``
        (the sparse task reward); None leaves the reward as the env gave it.
      step_hz: pace the steps to this rate (a simulator runs faster than a person can
        follow); 0: no pacing (a real arm paces itself).
      on_step: called with the env after every step (the viewer).

    Returns:
      ``(outcome, episode or None)``: outcome ``"success"``, ``"failure"``, ``"rerecord"``,
      ``"quit"`` or ``"input_ended"``; the episode (episodes.py format, metadata ``seed``,
      ``success``, ``end`` (``"success_mark"``, ``"env_success"``, ``"failure_mark"``,
      ``"time_limit"``, ``"env_end"``: terminated without success), ``human_input_steps``)
      for success and failure, else None.
    """
    from serl_ext.data.episodes import EpisodeRecorder
    from serl_ext.data.replay_buffer import ACTION_SOURCE_HUMAN
    from serl_ext.loop.common import grasp_penalty

    dim = int(np.prod(env.action_space.shape))
    gripper = INITIAL_GRIPPER.get(dim, 0.0)
    obs, _ = env.reset(seed=seed)
    if on_step is not None:
        on_step(env)
    tap.take()  # keys typed during the reset belong to no step
    recorder = EpisodeRecorder()
    recorder.reset(obs)
    human_steps, period, next_time = 0, (1.0 / step_hz if step_hz > 0 else 0.0), time.monotonic()
    while True:
        idle = np.zeros(dim, np.float32)
        idle[-1] = gripper
        calls = tap.calls
        try:
            obs, reward, terminated, truncated, info = env.step(idle)
            if tap.calls == calls:  # the wrapper reads no keys (4-D SpaceMouse): read the marks
                tap()
        except InputExhausted:
            return "input_ended", None
        mark = _last_mark(tap.take(), info.get("operator_mark"))
        if mark in ("quit", "rerecord"):
            return mark, None
        human = "intervene_action" in info
        executed = np.asarray(info["intervene_action"] if human else idle, np.float32)
        gripper = float(executed[-1])
        human_steps += int(human)
        env_success = bool(info.get("success", False))
        if mark == "success":
            end = "success_mark"
            terminated = True
            if success_reward is not None:
                reward = max(float(reward), float(success_reward))
        elif mark == "failure":
            end = "failure_mark"
            terminated, truncated = False, True
        elif env_success and (terminated or end_on_success):
            end, terminated = "env_success", True
        elif terminated or truncated:
            end = "env_success" if env_success else "time_limit" if truncated else "env_end"
        else:
            end = None
        if terminated:
            truncated = False
        recorder.step(
            executed, np.float32(reward), obs, terminated, truncated,
            intervention=False, action_source=ACTION_SOURCE_HUMAN,
            success=bool(env_success or mark == "success"),
            dense_reward=np.float32(info.get("dense_reward", 0.0)),
            grasp_penalty=grasp_penalty(info),
        )
        if on_step is not None:
            on_step(env)
        if end is not None:
            success = end in ("success_mark", "env_success")
            episode = recorder.finish({"seed": int(seed), "success": success, "end": end,
                                       "first_intervention_step": None, "human_input_steps": human_steps})
            return ("success" if success else "failure"), episode
        if period:
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))


def record_demos(make_env: Callable[[int], Any], out_dir: str, num_demos: int, *, input_kind: str,
                 key_source: Callable[[], Iterable[str]], device=None, seed_for: Callable[[int], int],
                 close_envs: bool = True, keep_failures: bool = False,
                 metadata: Optional[Dict[str, Any]] = None, max_episodes: int = 0,
                 log: Callable[[str], None] = print, **episode_kwargs) -> RecordReport:
    """Records episodes until ``out_dir`` holds ``num_demos`` successful demos.

    Files: ``out_dir/episode_NNNNNN.npz`` (ids after the largest already there,
    :class:`serl_ext.data.episodes.EpisodeWriter`), failed episodes with ``keep_failures`` in
    ``out_dir/failures/episode_NNNNNN.npz`` (``metadata["success"] = False``). Existing demos
    count towards ``num_demos``.

    Args:
      make_env: ``make_env(seed) -> env`` without the device (the device is added here).
      out_dir: the demo folder (created if needed).
      num_demos: successful demos wanted in ``out_dir`` (>= 1).
      input_kind: ``"keyboard"`` or ``"spacemouse"`` (:func:`wrap_with_device`).
      key_source: the keys typed (the terminal, a viewer, a :class:`ScriptedInput`).
      device: the SpaceMouse-like device (spacemouse; None opens the real one).
      seed_for: ``seed_for(k)`` is the reset seed of the k-th scene; a re-recorded episode
        repeats its scene's seed, a success or failure moves to the next.
      close_envs: close each env after its episode (False: ``make_env`` returns one shared env,
        e.g. one physical arm; it is not closed here).
      keep_failures: write failed episodes to ``out_dir/failures/`` instead of dropping them.
      metadata: merged into every episode's metadata (task, input, action_repeat, ...).
      max_episodes: stop after this many finished or discarded episodes (0: no limit).
      log: where one line per episode goes.
      **episode_kwargs: :func:`record_one`'s options (``end_on_success``, ``success_reward``,
        ``step_hz``, ``on_step``).

    Returns:
      a :class:`RecordReport`.

    Raises:
      ValueError: ``num_demos < 1``, an unknown ``input_kind``, an unsupported action size.
      ObservationMismatchError: ``out_dir`` already holds episodes of another observation layout.
    """
    from serl_ext.data.episodes import EpisodeWriter, check_episode_fits, list_episodes, load_episode

    if int(num_demos) < 1:
        raise ValueError(f"num_demos must be >= 1, got {num_demos}")
    if input_kind not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {input_kind!r}")
    writer = EpisodeWriter(out_dir, "episode")
    failures = None
    report = RecordReport()
    have = len(list_episodes(out_dir))
    tap = KeyTap(key_source)
    scene, episodes = 0, 0
    checked = False
    while have < int(num_demos):
        if max_episodes and episodes >= max_episodes:
            report.ended_by = "max_episodes"
            break
        seed = int(seed_for(scene))
        env = make_env(seed)
        try:
            if not checked:  # the folder's episodes must match this env's observations
                existing = list_episodes(out_dir)
                if existing:
                    spec = {k: (tuple(s.shape), s.dtype) for k, s in env.observation_space.spaces.items()}
                    check_episode_fits(load_episode(existing[0]), spec, int(np.prod(env.action_space.shape)),
                                       source=existing[0], target="env")
                checked = True
            wrapped = wrap_with_device(env, input_kind, tap, device)
            outcome, episode = record_one(wrapped, seed, tap, **episode_kwargs)
        finally:
            if close_envs:
                env.close()
        episodes += 1
        if outcome in ("quit", "input_ended"):
            report.ended_by = outcome
            log(f"[record] {'quit' if outcome == 'quit' else 'input ended'}: the unfinished episode is discarded")
            break
        if outcome == "rerecord":
            report.rerecorded += 1
            log(f"[record] re-record: episode discarded, scene {scene} (seed {seed}) again")
            continue
        scene += 1
        episode["metadata"] = {**dict(metadata or {}), **episode["metadata"]}
        length = len(episode["actions"])
        if outcome == "success":
            path = writer.write(episode)
            report.written.append(path)
            report.lengths.append(length)
            have += 1
            log(f"[record] success: {os.path.basename(path)} ({length} steps); {have}/{num_demos} demos")
        elif keep_failures:
            failures = failures or EpisodeWriter(os.path.join(out_dir, "failures"), "episode")
            path = failures.write(episode)
            report.failures_written.append(path)
            log(f"[record] failure ({episode['metadata']['end']}): kept as failures/{os.path.basename(path)}")
        else:
            report.failures_dropped += 1
            log(f"[record] failure ({episode['metadata']['end']}): dropped")
    return report


class ViewerWindow:
    """An OpenCV window showing the scene after every step (``on_step``) and giving the keys
    typed into it (a key source), so that the keyboard works with the window focused.

    Args:
      size: window image size in pixels (the env's render, resized).

    Raises:
      ImportError: OpenCV (``cv2``) is missing.
    """

    def __init__(self, size: int = 384, title: str = "record_demos"):
        import cv2

        self._cv2, self.size, self.title = cv2, int(size), title
        self._keys: List[str] = []
        self._failed = False

    def __call__(self, env) -> None:
        if self._failed:
            return
        try:
            frame = np.asarray(env.unwrapped.render(), np.uint8)
        except Exception as e:  # an env without an image renderer: keep recording without a view
            self._failed = True
            print(f"[record] no view: {type(e).__name__}: {e}")
            return
        frame = self._cv2.resize(frame, (self.size, self.size), interpolation=self._cv2.INTER_NEAREST)
        self._cv2.imshow(self.title, frame[:, :, ::-1])
        code = self._cv2.waitKey(1)
        if 0 <= code < 256:
            self._keys.append(chr(code))

    def keys(self) -> List[str]:
        out, self._keys = self._keys, []
        return out

    def close(self) -> None:
        self._cv2.destroyAllWindows()


def default_step_hz(config) -> float:
    """The person's pace: a Meta-World task runs at its control rate (80 Hz / action repeat);
    a simulated UR arm at ``robot.control.policy_hz``; a real arm paces itself (0)."""
    from serl_ext.envs.ur_tasks import is_ur_real_task, is_ur_task

    if is_ur_real_task(config.task):
        return 0.0
    if is_ur_task(config.task):
        return float(config.robot.control.get("policy_hz", 10.0))
    return 80.0 / float(config.env.action_repeat)


def run_recording(config, *, input_kind: str, out_dir: str, num_demos: int, seed: int = 0,
                  script: Optional[str] = None, view: bool = False, keep_failures: bool = False,
                  end_on_success: bool = True, step_hz: Optional[float] = None, max_episodes: int = 0,
                  log: Callable[[str], None] = print) -> RecordReport:
    """A recording session of ``config``'s task env (``launchers/record_demos.py``; also the
    ``ur:`` teleop path of ``launchers/collect_demos.py``).

    Builds the env with ``serl_ext.loop.common.make_env(config, seed, with_operator=False)``
    (fresh per scene in simulation; one shared env for a UR task), the device (``input_kind``;
    a ``script`` JSON file (:class:`ScriptedInput`) replaces the device and the typed keys),
    the key sources (the terminal when stdin is one, the ``view`` window), and calls
    :func:`record_demos` with the seeds ``3_000_000 + seed * 10_000 + k`` and metadata
    ``task``, ``source`` ("teleop"), ``input``, ``action_repeat``.

    Args:
      step_hz: None: :func:`default_step_hz`; with a script 0 (no pacing).

    Raises:
      ValueError: a ``gym:`` task, unknown ``input_kind``, no key source for the keyboard (no
        terminal, no view, no script).
      ImportError: a SpaceMouse without pyspacemouse, a view without OpenCV.
    """
    from serl_ext.envs.ur_tasks import is_ur_task
    from serl_ext.loop import common

    if str(config.task).startswith("gym:"):
        raise ValueError(f"{config.task}: recording drives a 4-D Meta-World or 7-D UR action; for a gym "
                         "task record your own episodes (serl_ext.data.episodes.EpisodeRecorder)")
    if input_kind not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {input_kind!r}")
    device, terminal = None, None
    viewer = ViewerWindow() if view else None
    if script is not None:
        scripted = ScriptedInput.from_json(script)
        keys: Callable[[], Iterable[str]] = scripted.keys
        device = scripted if input_kind == "spacemouse" else None
        step_hz = 0.0 if step_hz is None else step_hz
    else:
        import sys

        from serl_ext.envs.intervention import StdinKeySource

        terminal = StdinKeySource() if sys.stdin is not None and sys.stdin.isatty() else None
        if terminal is None and viewer is None and input_kind == "keyboard":
            raise ValueError("keyboard input needs an interactive terminal (or --view, or --script)")
        keys = MergedKeys(terminal, viewer.keys if viewer is not None else None)
        if input_kind == "spacemouse":
            from serl_ext.robots.spacemouse import SpaceMouse

            device = SpaceMouse()
    shared = None
    if is_ur_task(config.task):
        shared = common.make_env(config, 0, with_operator=False)

    def make_env(s):
        return shared if shared is not None else common.make_env(config, s, with_operator=False)

    metadata = {"task": str(config.task), "source": "teleop", "input": input_kind,
                "action_repeat": int(config.env.action_repeat)}
    try:
        return record_demos(
            make_env, out_dir, num_demos, input_kind=input_kind, key_source=keys, device=device,
            seed_for=lambda k: 3_000_000 + int(seed) * 10_000 + k, close_envs=shared is None,
            keep_failures=keep_failures, metadata=metadata, max_episodes=max_episodes, log=log,
            end_on_success=end_on_success,
            success_reward=1.0 if config.env.reward_type == "sparse" else None,
            step_hz=default_step_hz(config) if step_hz is None else float(step_hz),
            on_step=viewer)
    finally:
        if shared is not None:
            shared.close()
        if viewer is not None:
            viewer.close()
        if script is None and input_kind == "spacemouse" and hasattr(device, "close"):
            device.close()
        if terminal is not None:
            terminal.close()
