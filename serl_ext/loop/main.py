"""One entry point for every role; the role is chosen by flag.

  python -m serl_ext.loop.main --learner --config=configs/train.py:pick-place,hil_serl
  python -m serl_ext.loop.main --actor   --config=configs/train.py:pick-place,hil_serl
  python -m serl_ext.loop.main --eval    --config=configs/train.py:pick-place,hil_serl

Any config field can be overridden (``--config.seed=1``, ``--config.transport.ip=10.0.0.2``).
Each process copies its console into ``{run_dir}/logs/{role}.log`` (``logging.log_file``);
``--quiet`` keeps the terminal free (everything goes to the log; a fatal error also reaches the
terminal). The actor ends with a result table (task, method, env steps, minutes, final SR, IR,
run folder).

``--eval`` restores a learner checkpoint of the run folder (``--checkpoint_step``, default the
newest intact one) and runs K episodes on the fixed evaluation seeds (``--eval_episodes``,
default ``actor.eval_episodes``), deterministic or ``--stochastic``, with or without the
method's gate (``--gate=auto|on|off``), filming the first ``--videos`` of them
(``--camera``). It writes ``eval.json`` (the newest result) and
``eval/step{S}_{deterministic|stochastic}_{gate|policy}.json`` (per-episode records and 95%
intervals: Wilson for SR, Student-t for the mean return) into the run folder and prints a table.
"""

import contextlib
import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from serl_ext.loop.checkpoint_eval import evaluate_checkpoint

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/train.py:pick-place,hil_serl", "Training config: FILE.py:TASK,ALGORITHM."
)
_ACTOR = flags.DEFINE_bool("actor", False, "Run the actor process.")
_LEARNER = flags.DEFINE_bool("learner", False, "Run the learner process.")
_EVAL = flags.DEFINE_bool("eval", False, "Evaluate a checkpoint of the run (default: the newest).")
_QUIET = flags.DEFINE_bool("quiet", False, "Console only into {run_dir}/logs/ROLE.log (fatal errors also here).")
_EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 0, "Episodes for --eval (0: config value).")
_CHECKPOINT_STEP = flags.DEFINE_integer("checkpoint_step", -1, "--eval: checkpoint step (-1: the newest intact).")
_STOCHASTIC = flags.DEFINE_bool("stochastic", False, "--eval: sample actions instead of the policy's mode.")
_GATE = flags.DEFINE_enum("gate", "auto", ["auto", "on", "off"],
                          "--eval: policy + the method's gate (on), the policy alone (off), or on when the "
                          "method has a gate that evaluates with it (auto).")
_VIDEOS = flags.DEFINE_integer("videos", 0, "--eval: film the first N episodes into {run_dir}/videos.")
_CAMERA = flags.DEFINE_string("camera", "", "--eval: video camera (default logging.video_camera).")
_DEVICE = flags.DEFINE_enum("device", "", ["", "auto", "cpu", "gpu"],
                            "Device of this process: auto (an accelerator when jax sees one, else the CPU), cpu "
                            "or gpu; empty: {ROLE}_DEVICE from the environment, else auto for the learner and "
                            "cpu for actor and eval (serl_ext/devices.py, docs/gpu_and_devices.md).")
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config as JSON and exit.")


def _run_role(config):
    if _ACTOR.value:
        from serl_ext.loop.actor import run_actor
        from serl_ext.loop.common import actor_dir_for
        from serl_ext.loop.logging import result_table

        summary = run_actor(config)
        run_dir = actor_dir_for(config)
        inside = os.path.commonpath([run_dir, os.getcwd()]) == os.getcwd()
        print("\n" + result_table(summary, os.path.relpath(run_dir) if inside else run_dir))
    elif _LEARNER.value:
        from serl_ext.loop.learner import run_learner

        summary = run_learner(config)
        print(f"[learner] done: {summary.get('learner_steps')} learner steps, replay {summary.get('replay_size')}, "
              f"demo buffer {summary.get('demo_size')} transitions (learner_summary.json)")
    else:
        step = _CHECKPOINT_STEP.value
        evaluate_checkpoint(config, None if step < 0 else step, _EVAL_EPISODES.value, _STOCHASTIC.value,
                            _GATE.value, _VIDEOS.value, _CAMERA.value)


def main(argv):
    del argv
    if _PRINT_CONFIG.value:
        print(_CONFIG.value.to_json_best_effort(indent=2, sort_keys=True))
        return
    roles = [_ACTOR.value, _LEARNER.value, _EVAL.value]
    if sum(roles) != 1:
        sys.exit("choose exactly one role: --actor, --learner or --eval")
    role = "actor" if _ACTOR.value else "learner" if _LEARNER.value else "eval"
    config = _CONFIG.value
    if _QUIET.value:
        config.logging.progress_bar = False
    process_log = contextlib.nullcontext()
    if bool(config.logging.get("log_file", True)) or _QUIET.value:
        from serl_ext.loop.common import actor_dir_for, run_dir_for
        from serl_ext.loop.logging import ProcessLog

        folder = actor_dir_for(config) if role == "actor" else run_dir_for(config)  # actor k: its own folder
        process_log = ProcessLog(os.path.join(folder, "logs", f"{role}.log"), quiet=_QUIET.value)
    with process_log as plog:
        # After the console copy is in place, so that log records reach the log file too.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            force=True)
        # Orbax and friends log every checkpoint step at INFO through absl; keep the console readable.
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("OpenGL").setLevel(logging.WARNING)  # "No OpenGL_accelerate module loaded"
        try:
            from serl_ext.devices import setup_device

            setup_device(role, _DEVICE.value)  # before any jax computation; prints "[role] device: ..."
            _run_role(config)
        except SystemExit as e:
            if plog is not None and isinstance(e.code, str):
                plog.fatal(f"[{role}] {e.code}")
                if plog.quiet:
                    raise SystemExit(1) from None
            raise
        except BaseException as e:
            if plog is not None:
                import traceback

                plog.log_only(traceback.format_exc())
                plog.fatal(f"[{role}] failed: {type(e).__name__}: {e} (full log: {plog.path})")
                if plog.quiet:
                    raise SystemExit(1) from None
            raise


def run():
    app.run(main)


if __name__ == "__main__":
    run()
