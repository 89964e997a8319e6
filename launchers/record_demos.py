"""Records demos by a person: drive the task's robot with the keyboard or a SpaceMouse and mark
each episode; the accepted ones are written as episode files that the learner loads as demos.

  python launchers/record_demos.py --task=pick-place --input=keyboard --num_demos=20 --view
  python launchers/record_demos.py --task=pick-place,hil_serl_pixels --input=spacemouse
  python launchers/record_demos.py --task=ur:ur5e --input=spacemouse --config.robot.host=10.0.0.3

Keys (terminal or ``--view`` window): ``y`` success (keep the episode as a demo), ``n`` failure
(drop it; ``--keep_failures`` writes it to OUT/failures/), ``x`` re-record (discard, reset the same
scene), ``q`` quit. The simulator's success flag also ends an episode as a success, the time limit
as a failure. Keyboard movement: w/s a/d r/f (xyz), space toggles the gripper (UR arm: also u/o
i/k j/l rotations); SpaceMouse: move it, left button closes, right button opens the gripper.

The env is the training run's (``--task=TASK[,ALGORITHM]`` plus ``--config.FIELD=VALUE``), so the
demos have the observation keys the run's buffers expect; the default folder is the run's
(``serl_ext/loop/demo_folders.py``: ``demos/TASK`` for state, ``demos/TASK-pixelsS`` for images).
``--script=FILE.json`` replays a scripted device instead of a person (tests, dry runs).
docs/recording_demos.md has the details.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_TASK = flags.DEFINE_string("task", "pick-place",
                            "TASK or TASK,ALGORITHM (the training config whose env is used).")
_INPUT = flags.DEFINE_enum("input", None, ["keyboard", "spacemouse"],
                           "Device; default: config.human_input when it is one of these, else keyboard.")
_NUM = flags.DEFINE_integer("num_demos", None,
                            "Successful demos wanted in the folder (default: config.demos.num_demos).")
_OUT = flags.DEFINE_string("out", "",
                           "Output folder (default: the run's demo folder, serl_ext/loop/demo_folders.py).")
_SEED = flags.DEFINE_integer("seed", 0, "Scene seeds are 3_000_000 + seed * 10_000 + k.")
_KEEP = flags.DEFINE_bool("keep_failures", False,
                          "Write failed episodes to OUT/failures/ instead of dropping them.")
_END = flags.DEFINE_bool("end_on_success", True, "End an episode at the simulator's first success step.")
_HZ = flags.DEFINE_float("step_hz", None,
                         "Pace of the env steps (default: the task's control rate; 0: as fast as possible).")
_VIEW = flags.DEFINE_bool("view", False, "Show the scene in an OpenCV window (its keys count too).")
_SCRIPT = flags.DEFINE_string("script", None,
                              "JSON script replayed instead of the device (serl_ext.loop.recording.ScriptedInput).")
_MAX = flags.DEFINE_integer("max_episodes", 0, "Stop after this many episodes (0: until num_demos or quit).")
_OVERRIDES = flags.DEFINE_multi_string(
    "config", [], "Training-config overrides FIELD=VALUE (--config.FIELD=VALUE is read the same way).")

def main(argv):
    del argv
    from configs.train import get_config
    from serl_ext.loop.config_overrides import apply_overrides
    from serl_ext.loop.demo_folders import demo_dir_for
    from serl_ext.loop.recording import INPUTS, run_recording

    spec = _TASK.value if "," in _TASK.value else f"{_TASK.value},hil_serl"
    try:
        config = get_config(spec)
    except (KeyError, ValueError) as e:
        raise SystemExit(f"--task={_TASK.value}: {e}") from None
    apply_overrides(config, _OVERRIDES.value)
    input_kind = _INPUT.value or (config.human_input if config.human_input in INPUTS else "keyboard")
    num = int(config.demos.num_demos if _NUM.value is None else _NUM.value)
    if num < 1:
        raise SystemExit(f"--num_demos must be >= 1 (config.demos.num_demos is {config.demos.num_demos})")
    out = os.path.abspath(_OUT.value or demo_dir_for(config))
    print(f"[record] {config.task} ({config.algorithm}) with the {input_kind}: {num} demos into {out}; "
          "keys: y success, n failure, x re-record, q quit")
    try:
        report = run_recording(config, input_kind=input_kind, out_dir=out, num_demos=num, seed=_SEED.value,
                               script=_SCRIPT.value, view=_VIEW.value, keep_failures=_KEEP.value,
                               end_on_success=_END.value, step_hz=_HZ.value, max_episodes=_MAX.value)
    except ValueError as e:
        raise SystemExit(f"[record] {e}") from None
    print(f"[record] wrote {len(report.written)} demos to {out} ({report.rerecorded} re-recorded, "
          f"{len(report.failures_written)} failures kept, {report.failures_dropped} dropped; "
          f"ended: {report.ended_by})")


if __name__ == "__main__":
    from serl_ext.loop.config_overrides import split_config_flags

    app.run(main, argv=split_config_flags(sys.argv))
