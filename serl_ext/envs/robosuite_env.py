"""A simulated UR5e (robosuite 1.5.2, MuJoCo) behind the same ``UREnv`` control code.

``RobosuiteArm`` is an arm backend for ``serl_ext/robots/fake_rtde.py``'s RTDE stand-ins:
``servoL`` setpoints become the goal of robosuite's operational-space controller (absolute
pose input, world frame), ``speedL`` velocities are integrated into that goal, the standard
digital output 0 drives the gripper, and ``advance(dt)`` runs the physics for ``dt`` seconds
(the ``LockstepClock`` calls it between servo ticks). So ``UREnv`` (servo thread, safety
envelope, policy loop, TCP-frame actions) runs unchanged on the simulated arm.

Tasks (``make_robosuite_ur_env``): ``"Lift"`` (pick the cube up, 4 cm above the table) and
``"Wipe"`` (wipe the markers off the table with the wiping tool). Reward is sparse (1 on
success, then terminate); ``info["success"]``. The observation is ``UREnv``'s ``"state"``
(TCP pose relative to the reset pose, velocity, wrench, gripper) plus the task's privileged
extra state (Lift: cube position in the base frame and cube minus TCP; Wipe: the centroid of the
remaining markers relative to the TCP and the fraction wiped); with ``privileged_state=False`` in
the robot config the policy sees UREnv's state alone (``ProprioOnlyTask``: pixel presets, where
the cameras show the objects). ``scripted_expert(env)`` returns a policy ``obs -> action`` in the
same 7-D convention.

Cameras (``backend="robosuite"`` entries of the robot config's ``cameras``; the entry's name is
the observation key): ``frontview`` / ``agentview`` (in front of the table; ``agentview`` is
closer, cube and gripper large) and ``robot0_eye_in_hand`` (the wrist camera); also
``birdview``, ``sideview``, ``robot0_robotview``.

robosuite is imported lazily. Install: ``pip install -e .[robosuite]`` then
``pip install --no-deps robosuite==1.5.2`` (setup.py says why). It ships its own UR5e model;
nothing is downloaded at run time.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Optional

import numpy as np
from scipy.spatial.transform import Rotation

from serl_ext.robots.fake_rtde import KinematicArm, fake_rtde_factory

TASKS = ("Lift", "Wipe")


def _import_robosuite():
    try:
        import robosuite
        from robosuite.controllers import load_composite_controller_config
    except ImportError as err:
        raise ImportError(
            "the simulated UR5e needs robosuite 1.5.2: `pip install -e .[robosuite]` then "
            "`pip install --no-deps robosuite==1.5.2`") from err
    return robosuite, load_composite_controller_config


class RobosuiteArm(KinematicArm):
    """UR5e in robosuite as an arm backend (see ``fake_rtde.py`` for the protocol).

    Poses are in the robot's base frame (robosuite's robot base body), as on the real arm.

    Args:
        task: ``"Lift"`` or ``"Wipe"``.
        servo_hz: robosuite control frequency = the servo rate (one controller update per tick).
        seed: robosuite's own generator (object placement, joint noise); reseeded per episode
            by ``reseed``.
        clock: the ``LockstepClock`` (timestamps of recorded commands).
        suite_kwargs: extra arguments of ``robosuite.make``.
    Raises:
        ImportError: robosuite missing. ValueError: unknown task.
    """

    def __init__(self, task: str = "Lift", servo_hz: float = 125.0, seed: int = 0, clock=None,
                 **suite_kwargs):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        suite, load_controller = _import_robosuite()
        controller = load_controller(controller=None, robot="UR5e")
        arm_cfg = controller["body_parts"]["right"]
        arm_cfg["input_type"] = "absolute"
        arm_cfg["input_ref_frame"] = "world"
        kwargs = dict(robots="UR5e", controller_configs=controller, has_renderer=False,
                      has_offscreen_renderer=False, use_camera_obs=False, control_freq=int(servo_hz),
                      horizon=10 ** 9, ignore_done=True, hard_reset=False, reward_shaping=False,
                      seed=int(seed))
        kwargs.update(suite_kwargs)
        self.task = task
        self.sim_lock = threading.RLock()
        self.env = suite.make(task, **kwargs)
        self.env.reset()
        robot = self.env.robots[0]
        self.robot = robot
        self.site_id = robot.eef_site_id["right"]
        self.base_pos = np.asarray(robot.base_pos, float).copy()
        self.base_rot = Rotation.from_matrix(np.asarray(robot.base_ori, float).reshape(3, 3))
        self.servo_dt = 1.0 / float(servo_hz)
        self.has_gripper = self.env.action_dim == 7
        super().__init__(self._measure_pose(), clock=clock)
        self._goal = self._pose.copy()
        self._prev_pose = self._pose.copy()

    # -- frames
    def _measure_pose(self) -> np.ndarray:
        data = self.env.sim.data
        p_w = np.asarray(data.site_xpos[self.site_id], float)
        r_w = Rotation.from_matrix(np.asarray(data.site_xmat[self.site_id], float).reshape(3, 3))
        pose = np.empty(6)
        pose[:3] = self.base_rot.inv().apply(p_w - self.base_pos)
        pose[3:] = (self.base_rot.inv() * r_w).as_rotvec()
        return pose

    def to_base(self, p_world) -> np.ndarray:
        """World point (3,) -> base frame."""
        return self.base_rot.inv().apply(np.asarray(p_world, float) - self.base_pos)

    def _world_action(self) -> np.ndarray:
        pos = self.base_pos + self.base_rot.apply(self._goal[:3])
        rot = (self.base_rot * Rotation.from_rotvec(self._goal[3:])).as_rotvec()
        parts = [pos, rot]
        if self.has_gripper:
            closed = self.digital_out.get(("standard", 0), False)
            parts.append([1.0 if closed else -1.0])
        return np.concatenate(parts)

    # -- backend protocol
    def tcp_pose(self) -> np.ndarray:
        with self._lock:
            return self._pose.copy()

    def tcp_force(self) -> np.ndarray:
        with self.sim_lock:
            force = np.asarray(self.robot.ee_force["right"], float)
            torque = np.asarray(self.robot.ee_torque["right"], float)
            rot = self.base_rot.inv() * Rotation.from_matrix(
                np.asarray(self.env.sim.data.site_xmat[self.site_id], float).reshape(3, 3))
        return np.concatenate([rot.apply(force), rot.apply(torque)]) - self.ft_offset

    def servo(self, pose) -> None:
        with self._lock:
            self._velocity_cmd = np.zeros(6)
            self._goal = np.asarray(pose, float).copy()

    def stop(self, deceleration: float) -> None:
        with self._lock:
            self._velocity_cmd = np.zeros(6)
            self._goal = self._pose.copy()

    def advance(self, dt: float) -> None:
        """Runs the physics for ``dt`` (whole servo periods, at least one)."""
        steps = max(1, int(round(dt / self.servo_dt)))
        for _ in range(steps):
            with self._lock:
                v = self._velocity_cmd
                if np.any(v):
                    self._goal[:3] += v[:3] * self.servo_dt
                    self._goal[3:] = (Rotation.from_rotvec(v[3:] * self.servo_dt)
                                      * Rotation.from_rotvec(self._goal[3:])).as_rotvec()
                action = self._world_action()
            with self.sim_lock:
                self.env.step(action)
                pose = self._measure_pose()
            with self._lock:
                self._prev_pose, self._pose = self._pose, pose
                rel = Rotation.from_rotvec(pose[3:]) * Rotation.from_rotvec(self._prev_pose[3:]).inv()
                self._speed = np.concatenate([(pose[:3] - self._prev_pose[:3]) / self.servo_dt,
                                              rel.as_rotvec() / self.servo_dt])

    def reseed(self, seed: int) -> None:
        """Reseeds robosuite's generator in place and resets the scene (object placement)."""
        with self.sim_lock:
            self.env.rng.bit_generator.state = np.random.default_rng(int(seed)).bit_generator.state
            self.env.reset()
            pose = self._measure_pose()
        with self._lock:
            self._pose = self._prev_pose = pose
            self._goal = pose.copy()
            self._speed = np.zeros(6)
            self._velocity_cmd = np.zeros(6)
            self.digital_out.clear()


class RobosuiteCamera:
    """Capture backend rendering a robosuite camera (offscreen, EGL/OSMesa), RGB uint8.

    Used synchronously (``Camera(..., threaded=False)``): the frame is rendered at the control
    step, stamped with the simulated time.
    """

    def __init__(self, arm: RobosuiteArm, camera_name: str, width: int, height: int):
        if camera_name not in arm.env.sim.model.camera_names:
            raise ValueError(f"unknown robosuite camera {camera_name!r}; known: {list(arm.env.sim.model.camera_names)}")
        self.arm, self.camera_name, self.width, self.height = arm, camera_name, int(width), int(height)

    def read(self):
        with self.arm.sim_lock:
            image = self.arm.env.sim.render(camera_name=self.camera_name, width=self.width, height=self.height)
        return np.ascontiguousarray(image[::-1]), self.arm.time()  # OpenGL rows run bottom-up

    def close(self) -> None:
        pass


class LiftTask:
    """Lift hooks for ``UREnv``: extra state = cube position (base frame) and cube - TCP (6,)."""

    extra_state_dim = 6

    def __init__(self, arm: RobosuiteArm):
        self.arm = arm
        self.cube_id = arm.env.cube_body_id

    def cube_pos(self) -> np.ndarray:
        with self.arm.sim_lock:
            return self.arm.to_base(self.arm.env.sim.data.body_xpos[self.cube_id])

    def extra_state(self) -> np.ndarray:
        cube = self.cube_pos()
        return np.concatenate([cube, cube - self.arm.tcp_pose()[:3]]).astype(np.float32)

    def reward(self):
        with self.arm.sim_lock:
            success = bool(self.arm.env._check_success())
        return float(success), success

    def on_reset(self, rng) -> None:
        self.arm.reseed(int(rng.integers(2 ** 31 - 1)))


class WipeTask:
    """Wipe hooks: extra state = remaining markers' centroid - TCP (3,) and the wiped fraction (1,)."""

    extra_state_dim = 4

    def __init__(self, arm: RobosuiteArm):
        self.arm = arm

    def remaining_markers(self) -> np.ndarray:
        """Base-frame positions (n, 3) of the markers not wiped yet."""
        env = self.arm.env
        with self.arm.sim_lock:
            left = [m for m in env.model.mujoco_arena.markers if m not in env.wiped_markers]
            pos = [env.sim.data.body_xpos[env.sim.model.body_name2id(m.root_body)] for m in left]
        return np.array([self.arm.to_base(p) for p in pos]).reshape(-1, 3)

    def extra_state(self) -> np.ndarray:
        left = self.remaining_markers()
        total = len(self.arm.env.model.mujoco_arena.markers)
        centre = left.mean(axis=0) - self.arm.tcp_pose()[:3] if len(left) else np.zeros(3)
        return np.concatenate([centre, [1.0 - len(left) / total]]).astype(np.float32)

    def reward(self):
        with self.arm.sim_lock:
            success = bool(self.arm.env._check_success())
        return float(success), success

    def on_reset(self, rng) -> None:
        self.arm.reseed(int(rng.integers(2 ** 31 - 1)))


class ProprioOnlyTask:
    """Task hooks without the privileged extra state: ``extra_state_dim`` 0, so the observation's
    ``"state"`` is UREnv's 19-D proprioception alone. Everything else (reward, reset, the
    simulator reads of the scripted expert and the operator) is the wrapped hooks'.

    Args:
        hooks: ``LiftTask`` or ``WipeTask``.
    """

    extra_state_dim = 0

    def __init__(self, hooks):
        self.hooks = hooks

    def __getattr__(self, name):
        return getattr(self.__dict__["hooks"], name)

    def extra_state(self) -> np.ndarray:
        return np.zeros(0, np.float32)


def task_hooks(task) -> object:
    """The ``LiftTask`` / ``WipeTask`` under an optional ``ProprioOnlyTask``."""
    return task.hooks if isinstance(task, ProprioOnlyTask) else task


def make_robosuite_ur_env(task: str = "Lift", seed: int = 0, config=None):
    """``UREnv`` on a simulated UR5e (robosuite), lockstep clock, fake RTDE interfaces.

    Args:
        task: ``"Lift"`` or ``"Wipe"``.
        seed: robosuite's initial seed (each ``reset(seed=s)`` then reseeds the scene from
            ``s``: the same ``s`` gives the same layout).
        config: a robot config; None = ``configs/robots/ur5e_sim.py:get_config(task)``. Its
            ``cameras`` may hold ``backend="robosuite"`` entries (``device`` = a robosuite camera
            such as ``"frontview"`` or ``"robot0_eye_in_hand"``), rendered offscreen at every
            step (``MUJOCO_GL=egl`` on a headless machine; slow on a CPU). Its optional
            ``privileged_state`` (default True): False drops the task's extra state from the
            observation (``ProprioOnlyTask``).
    Returns:
        ``UREnv`` (``env.unwrapped.arm`` is the ``RobosuiteArm``, ``env.unwrapped.task`` the hooks).
    Raises:
        ImportError: robosuite missing (message says how to install).
        ValueError: a camera with another backend, or an unknown robosuite camera.
    """
    from configs.robots import ur5e_sim
    from serl_ext.robots.clock import LockstepClock
    from serl_ext.robots.ur import UREnv

    config = config if config is not None else ur5e_sim.get_config(task)
    clock = LockstepClock(wall_timeout_s=120.0)
    cam_cfgs = config.get("cameras", {})
    for name in cam_cfgs.keys():
        if cam_cfgs[name].backend != "robosuite":
            raise ValueError(f"camera {name!r}: the simulated arm only has backend 'robosuite' cameras")
    arm = RobosuiteArm(task, servo_hz=float(config.control.servo_hz), seed=seed, clock=clock,
                       has_offscreen_renderer=len(cam_cfgs) > 0)
    clock.on_tick = arm.advance
    hooks = LiftTask(arm) if task == "Lift" else WipeTask(arm)
    if not bool(config.get("privileged_state", True)):
        hooks = ProprioOnlyTask(hooks)
    rig = None
    if len(cam_cfgs) > 0:
        from serl_ext.robots.cameras import Camera, CameraRig

        rig = CameraRig([Camera(name, RobosuiteCamera(arm, c.device, c.width, c.height), c.crop, c.size,
                                clock, threaded=False) for name, c in sorted(cam_cfgs.items())],
                        max_age_s=float(config.camera_max_age_s), on_stale=config.camera_on_stale)
    env = UREnv(config, rtde_factory=fake_rtde_factory(arm), clock=clock, task=hooks, cameras=rig)
    env.arm = arm
    return env


def _to_action(env, delta_base, rot_base=None, gripper=0.0, gain=1.0) -> np.ndarray:
    """Base-frame displacement (m) / rotation (rad) -> 7-D action in the env's action frame."""
    cfg = env.config.action
    motion = np.zeros(6)
    motion[:3] = np.asarray(delta_base, float) * gain / float(cfg.pos_scale)
    if rot_base is not None:
        motion[3:] = np.asarray(rot_base, float) / float(cfg.rot_scale)
    a = env.base_to_action_frame(motion)
    peak = np.max(np.abs(a[:3]))
    if peak > 1:
        a[:3] /= peak
    a[3:] = np.clip(a[3:], -1, 1)
    return np.concatenate([a, [gripper]]).astype(np.float32)


def scripted_expert(env) -> Callable:
    """A privileged scripted policy for the env's task; returns ``policy(obs) -> action (7,)``.

    Lift: above the cube, down, close, lift. Wipe: down to the table, then visit the nearest
    remaining marker, pressing lightly. Reads the simulator (cube / marker positions) and the
    measured TCP pose; keeps the home orientation.
    """
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    task = base.task
    state = {"phase": 0, "count": 0}
    home_rot = Rotation.from_rotvec(base.home_pose[3:])

    def hold_orientation(pose):
        return (home_rot * Rotation.from_rotvec(pose[3:]).inv()).as_rotvec() * 0.5

    def lift_policy(obs):
        pose = base.arm.tcp_pose()
        cube = task.cube_pos()
        rot = hold_orientation(pose)
        if state["phase"] == 0:  # above the cube, open
            goal = cube + [0, 0, 0.08]
            if np.linalg.norm(goal - pose[:3]) < 0.01:
                state["phase"] = 1
            return _to_action(base, goal - pose[:3], rot, -1.0)
        if state["phase"] == 1:  # down around the cube
            goal = cube + [0, 0, 0.0]
            if np.linalg.norm(goal - pose[:3]) < 0.008:
                state["phase"], state["count"] = 2, 0
            return _to_action(base, goal - pose[:3], rot, -1.0)
        if state["phase"] == 2:  # close
            state["count"] += 1
            if state["count"] >= 6:
                state["phase"] = 3
            return _to_action(base, np.zeros(3), rot, 1.0)
        goal = np.array([pose[0], pose[1], cube[2] + 0.15])  # lift
        return _to_action(base, goal - pose[:3], rot, 1.0)

    def wipe_policy(obs):
        pose = base.arm.tcp_pose()
        rot = hold_orientation(pose)
        left = task.remaining_markers()
        if len(left) == 0:
            return _to_action(base, np.zeros(3), rot)
        nearest = left[np.argmin(np.linalg.norm(left[:, :2] - pose[:2], axis=1))]
        goal = np.array([nearest[0], nearest[1], nearest[2] - 0.01])  # press slightly into the table
        delta = goal - pose[:3]
        if np.linalg.norm(delta[:2]) > 0.03:  # travel just above the surface
            delta[2] = nearest[2] + 0.005 - pose[2]
        return _to_action(base, delta, rot)

    return lift_policy if isinstance(task_hooks(base.task), LiftTask) else wipe_policy


def run_expert(task: str, seeds, max_steps: Optional[int] = None) -> dict:
    """Runs the scripted expert on fresh resets with the given seeds.

    Returns:
        ``{"task", "episodes", "success_rate", "mean_steps_success", "safety_stops", "per_seed"}``.
    """
    env = make_robosuite_ur_env(task, seed=0)
    results = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            policy = scripted_expert(env)
            steps, success, status = 0, False, "ok"
            limit = max_steps or env.max_episode_steps
            while steps < limit:
                obs, reward, terminated, truncated, info = env.step(policy(obs))
                steps += 1
                status = info["safety_status"]
                if terminated or truncated:
                    success = bool(info["success"])
                    break
            results.append({"seed": int(seed), "success": success, "steps": steps, "safety_status": status})
    finally:
        env.close()
    wins = [r for r in results if r["success"]]
    return {
        "task": task,
        "episodes": len(results),
        "success_rate": len(wins) / max(len(results), 1),
        "mean_steps_success": float(np.mean([r["steps"] for r in wins])) if wins else math.nan,
        "safety_stops": sum(r["safety_status"] != "ok" for r in results),
        "per_seed": results,
    }


def main(argv=None) -> int:
    """``python -m serl_ext.envs.robosuite_env --task Lift --seeds 20 [--out FILE]``: measures the expert."""
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--task", default="Lift", choices=TASKS)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1")
    parser.add_argument("--out", default="", help="write the result as JSON here")
    args = parser.parse_args(argv)
    start = time.time()
    result = run_expert(args.task, range(args.seeds))
    result["wall_clock_s"] = round(time.time() - start, 1)
    result["command"] = f"python -m serl_ext.envs.robosuite_env --task {args.task} --seeds {args.seeds}"
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
