"""Simulated task registry: Meta-World v3 stand-ins for the paper's real tasks.

Each task maps a short name to a Meta-World MT1 v3 environment, a default
episode length and the simulated operator's stall window. Lengths and
windows are in *agent steps at action repeat 4* (20 Hz control; Meta-World
itself runs at 80 Hz with 5 MuJoCo substeps per env step).

Measured with ``python benchmarks/expert_success.py`` (50 seeds, scripted
``metaworld.policies`` expert, action held for 4 sim steps, sparse reward,
terminate on success; see ``benchmarks/results/expert_success.md``):

================  ==================  ===  =======  ==========  ====  ===
short name        Meta-World env      T    expert   mean len    max   W
                                           success  (success)   flat
================  ==================  ===  =======  ==========  ====  ===
pick-place        pick-place-v3       125  1.00     13.4        5     10
peg-insert-side   peg-insert-side-v3  125  0.96     26.1        25    38
assembly          assembly-v3         125  1.00     23.3        9     14
sweep-into        sweep-into-v3       125  0.88     15.0        6     10
box-close         box-close-v3        125  0.96     36.1        43    65
================  ==================  ===  =======  ==========  ====  ===

``T`` is the default episode length (agent steps; 125 = Meta-World's own
500-step cap, and the length DESIGN.md section 7 trained pick-place with);
the expert's longest successful episode is far shorter (<= 51 steps), so a
longer T would not raise its success. "max flat" is the longest stretch of
agent steps in which Meta-World's dense reward did not improve by more than
0.05 over its running best (successful episodes). The operator's stall
window ``W`` is ceil(1.5x) that, with a floor of 10 steps (a person does not
react to a 0.3 s pause). DESIGN.md's 25/31/84-step flat stretches were sim
steps (80 Hz); in agent steps they are about 6/8/21, matching these.

sweep-into's expert stays below 0.90 at any episode length (0.88 at action
repeat 4, 0.92 at repeat 1): in about 1 layout in 10 the hand lands on the
puck and drags it away from the goal; that is the Meta-World policy, not
the time limit.

Every other Meta-World v3 task is available by its name too (``drawer-open`` or
``drawer-open-v3``): its episode length is Meta-World's own 500-step cap (125 agent steps at
action repeat 4) and its stall window W is derived the same way from its expert's runs, read
from ``metaworld_tasks.json`` beside this file (written by ``python
benchmarks/metaworld_tasks.py``, 20 seeds per task; the expert's measured success is in
``benchmarks/results/metaworld_tasks.md``).

Paper task -> stand-in (DESIGN.md section 6): Pick Eggplant -> pick-place
(no distractor objects yet), Tube Insertion -> peg-insert-side, RAM Insertion
-> assembly, Wipe Whiteboard -> sweep-into, Fold Towel -> box-close.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import warnings
from typing import Callable, Dict

import numpy as np

#: Action repeat at which the lengths and windows in the table are given.
REFERENCE_ACTION_REPEAT = 4


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Static description of one simulated task.

    Attributes:
        name: short name, e.g. ``"pick-place"``.
        env_name: Meta-World v3 name, e.g. ``"pick-place-v3"``.
        max_episode_steps: default episode length in agent steps at action
            repeat 4 (``REFERENCE_ACTION_REPEAT``).
        stall_window: operator's stall window W in agent steps at action
            repeat 4.
        expert_class: class name in ``metaworld.policies``.
        paper_task: the real-robot task of the UniIntervene paper it stands in for.
        instruction: a language instruction for instruction-conditioned models.
    """

    name: str
    env_name: str
    max_episode_steps: int
    stall_window: int
    expert_class: str
    paper_task: str
    instruction: str


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("pick-place", "pick-place-v3", 125, 10,
                 "SawyerPickPlaceV3Policy", "Pick Eggplant",
                 "pick up the object and place it at the goal"),
        TaskSpec("peg-insert-side", "peg-insert-side-v3", 125, 38,
                 "SawyerPegInsertionSideV3Policy", "Tube Insertion",
                 "pick up the peg and insert it sideways into the hole"),
        TaskSpec("assembly", "assembly-v3", 125, 14,
                 "SawyerAssemblyV3Policy", "RAM Insertion",
                 "pick up the nut and place it onto the peg"),
        TaskSpec("sweep-into", "sweep-into-v3", 125, 10,
                 "SawyerSweepIntoV3Policy", "Wipe Whiteboard",
                 "sweep the puck into the hole"),
        TaskSpec("box-close", "box-close-v3", 125, 65,
                 "SawyerBoxCloseV3Policy", "Fold Towel",
                 "pick up the lid and close the box"),
    )
}

_BY_ENV_NAME = {spec.env_name: spec for spec in TASKS.values()}

#: Measured per-task table of every Meta-World v3 task (``benchmarks/metaworld_tasks.py``).
METAWORLD_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metaworld_tasks.json")
#: Episode length of a task outside the stand-ins: Meta-World's 500-step cap at action repeat 4.
DEFAULT_EPISODE_STEPS = 125
#: Floor of the stall window (a person does not react to a 0.5 s pause).
MIN_STALL_WINDOW = 10


def stall_window_from_flat(max_flat: int) -> int:
    """The operator's stall window from the expert's longest flat stretch (agent steps):
    ``max(10, ceil(1.5 * max_flat))`` (DESIGN.md section 6)."""
    return max(MIN_STALL_WINDOW, int(math.ceil(1.5 * int(max_flat))))


@functools.lru_cache(maxsize=1)
def _metaworld_names() -> Dict[str, str]:
    """Meta-World v3 env name -> expert class name, from ``metaworld.policies``."""
    from metaworld import policies
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return {name: policies.ENV_POLICY_MAP[name].__name__ for name in ALL_V3_ENVIRONMENTS
            if name in policies.ENV_POLICY_MAP}


def _measured_table() -> Dict[str, dict]:
    if not os.path.isfile(METAWORLD_TABLE):
        return {}
    with open(METAWORLD_TABLE) as f:
        return json.load(f).get("tasks", {})


def metaworld_task_spec(env_name: str) -> TaskSpec:
    """TaskSpec of any Meta-World v3 task from the measured table.

    Args:
        env_name: ``"drawer-open-v3"``.
    Raises:
        ValueError: not a Meta-World v3 task with a scripted expert, or the task is missing
            from ``metaworld_tasks.json`` (the message says how to measure it).
    """
    names = _metaworld_names()
    if env_name not in names:
        raise ValueError(f"{env_name!r} is not a Meta-World v3 task with a scripted expert")
    row = _measured_table().get(env_name)
    if row is None:
        raise ValueError(f"{env_name} has no measured stall window in {METAWORLD_TABLE}; run "
                         f"`python benchmarks/metaworld_tasks.py --tasks={env_name}`")
    short = env_name[: -len("-v3")]
    return TaskSpec(short, env_name, int(row["max_episode_steps"]), int(row["stall_window"]),
                    names[env_name], "", short.replace("-", " "))


def get_task_spec(task: str) -> TaskSpec:
    """Look up a task by short name (``"pick-place"``, ``"drawer-open"``) or v3 name.

    The five stand-ins come from ``TASKS``; every other Meta-World v3 task from
    ``metaworld_task_spec``.

    Raises:
        TypeError: if ``task`` is not a string.
        ValueError: if the name is unknown; the message lists the known names.
    """
    if not isinstance(task, str):
        raise TypeError(f"task must be a str, got {type(task).__name__}")
    if task in TASKS:
        return TASKS[task]
    if task in _BY_ENV_NAME:
        return _BY_ENV_NAME[task]
    env_name = task if task.endswith("-v3") else f"{task}-v3"
    try:
        names = _metaworld_names()
    except ImportError:  # pragma: no cover - metaworld is a core dependency
        names = {}
    if env_name in names:
        return metaworld_task_spec(env_name)
    known = sorted(TASKS) + sorted(n[:-3] for n in names if n[:-3] not in TASKS)
    raise ValueError(f"unknown task {task!r}; expected a stand-in or Meta-World v3 task: {known}")


def scale_steps(steps_at_reference: int, action_repeat: int) -> int:
    """Convert a step count given at action repeat 4 to ``action_repeat``.

    Keeps the same simulated time: ``ceil(steps * 4 / action_repeat)``.

    Raises:
        ValueError: if ``action_repeat < 1``.
    """
    if int(action_repeat) < 1:
        raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
    sim_steps = int(steps_at_reference) * REFERENCE_ACTION_REPEAT
    return int(-(-sim_steps // int(action_repeat)))


def get_expert(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """Scripted Meta-World expert for ``task``.

    Returns:
        ``expert(raw_obs) -> action``: ``raw_obs`` is the raw Meta-World
        observation, float (39,) (see ``get_privileged_state``); ``action`` is
        float32 (4,), clipped to [-1, 1] (xyz delta, gripper effort;
        positive = close).

    Raises:
        ValueError: unknown task, or (when called) ``raw_obs`` of wrong shape.
    """
    spec = get_task_spec(task)
    from metaworld import policies  # heavy import, kept local

    # Meta-World warns on every call that its gains exceed the action range;
    # the output is clipped below, which is exactly what the env does.
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high",
                            category=UserWarning)

    policy = getattr(policies, spec.expert_class)()

    def expert(raw_obs: np.ndarray) -> np.ndarray:
        raw_obs = np.asarray(raw_obs, dtype=np.float64)
        if raw_obs.shape != (39,):
            raise ValueError(
                f"expert for {spec.name} expects the raw Meta-World obs of shape (39,), "
                f"got {raw_obs.shape}")
        action = policy.get_action(raw_obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    expert.__name__ = f"expert_{spec.name.replace('-', '_')}"
    return expert
