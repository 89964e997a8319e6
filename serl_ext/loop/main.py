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
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config as JSON and exit.")


def evaluate_checkpoint(config, checkpoint_step=None, episodes=None, stochastic=False, gate_mode="auto",
                        videos=0, camera=""):
    """Evaluates one checkpoint of the run folder of ``config`` (module docstring).

    Args:
      config: the run's config (seeds, env, algorithm).
      checkpoint_step: a kept checkpoint step, None: the newest intact one.
      episodes: K (None or 0: ``actor.eval_episodes``).
      stochastic: sample actions (seeded per episode) instead of the deterministic mode.
      gate_mode: "on", "off" or "auto" (on for a method whose gate evaluates with it).
      videos: film the first this many episodes; camera: their camera ("" config default).
    Returns:
      the result dict written to ``eval.json``.
    Raises:
      SystemExit: no checkpoint, an unknown step (the message lists the kept ones), or
        ``gate_mode="on"`` for a method without a gate.
    """
    from serl_ext.loop import common
    from serl_ext.loop.checkpoint import Checkpointer
    from serl_ext.loop.evaluation import confidence_intervals, run_episodes, summarize
    from serl_ext.loop.logging import format_table

    run_dir = common.run_dir_for(config)
    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"), max_to_keep=None)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise SystemExit(f"no checkpoint in {checkpointer.directory}; train first (launchers/run_task.sh)")
        if checkpoint_step is not None and int(checkpoint_step) not in steps:
            raise SystemExit(f"checkpoint step {checkpoint_step} is not in {checkpointer.directory}; kept steps: "
                             f"{', '.join(map(str, steps))} (keep more with --config.learner.checkpoints_to_keep)")
        agent, spec, action_dim = common.agent_for_task(config)
        agent, counters = checkpointer.restore_agent(agent, checkpoint_step)  # the agent only, not the buffers
        step = checkpointer.restored_step
    finally:
        checkpointer.close()

    gate = None
    if gate_mode != "off":
        gate = _evaluation_gate(config, spec, action_dim, run_dir, required=gate_mode == "on")
    episodes = int(episodes or config.actor.eval_episodes)
    mode = "stochastic" if stochastic else "deterministic"
    video = None
    if videos:
        from serl_ext.loop.video import spec_from_config

        video = spec_from_config(config, os.path.join(run_dir, "videos"),
                                 f"checkpoint{step}_{mode}_{'gate' if gate else 'policy'}", episodes=videos,
                                 camera=camera or None)
    records = run_episodes(agent, config, episodes, gate, stochastic=stochastic, video=video)
    metrics = summarize(records, "eval", with_gate=gate is not None)
    intervals = confidence_intervals(records)
    result = {
        "task": config.task,
        "algorithm": config.algorithm,
        "seed": int(config.seed),
        "checkpoint_step": int(step),
        "learner_step": counters["learner_step"],
        "episodes": episodes,
        "mode": mode,
        "with_gate": gate is not None,
        "eval_seeds": [r["seed"] for r in records],
        "eval_success_rate": metrics["eval/success_rate"],
        "eval_success_rate_ci95": intervals["success_rate_ci"],
        "eval_return": metrics["eval/return"],
        "eval_return_ci95": intervals["return_ci"],
        "eval_length": metrics["eval/length"],
        "recovery_fraction": metrics.get("eval/recovery_fraction"),
        "videos": [r["video"] for r in records if r["video"]],
        "episode_records": records,
    }
    name = f"step{step}_{mode}_{'gate' if gate is not None else 'policy'}.json"
    common.atomic_write_json(os.path.join(run_dir, "eval", name), result)
    common.atomic_write_json(os.path.join(run_dir, "eval.json"), result)
    lo, hi = intervals["success_rate_ci"]
    ret_ci = intervals["return_ci"]
    print(format_table(
        ["task", "method", "checkpoint", "learner step", "episodes", "actions", "gate", "SR (95% CI)",
         "return (95% CI)"],
        [[config.task, config.algorithm, step, counters["learner_step"], episodes, mode,
          "on" if gate is not None else "off",
          f"{intervals['success_rate']:.2f} ({intervals['successes']}/{episodes}, {lo:.2f}-{hi:.2f})",
          f"{intervals['return_mean']:.2f}" + (f" ({ret_ci[0]:.2f}-{ret_ci[1]:.2f})" if ret_ci else "")]]))
    print(f"results: {os.path.join(run_dir, 'eval', name)}"
          + (f"\nvideos: {', '.join(result['videos'])}" if result["videos"] else ""))
    return result


def _evaluation_gate(config, spec, action_dim, run_dir, required: bool):
    """The method's gate with the models its learner extension saved in the run folder (the
    newest ones: extensions keep one copy), as the actor's system evaluation uses it; None for a
    method without a gate (SystemExit when ``required``)."""
    from serl_ext.loop import components

    from serl_ext.loop.gate import PassThroughGate

    gate = components.make_gate(config, spec, action_dim, None) if str(config.components.gate) else None
    if isinstance(gate, PassThroughGate):
        gate = None
    usable = gate is not None and (required or bool(getattr(gate, "eval_with_gate", False)))
    if not usable:
        if required:
            raise SystemExit(f"--gate=on: algorithm {config.algorithm!r} has no gate (config.components.gate is "
                             f"{str(config.components.gate)!r})")
        return None
    part_name = str(getattr(gate, "part_name", "") or "")
    if part_name:
        ext = components.make_learner_extension(config, spec, action_dim, run_dir, resumed=True)
        part = ext.message_part(0, True) if ext is not None else None
        if part is None:
            raise SystemExit(f"the gate needs its models ({part_name!r}) but {os.path.join(run_dir, part_name)} "
                             "gave none; evaluate with --gate=off")
        gate.load_params(part)
    if not getattr(gate, "ready", True):
        print(f"[eval] the gate's models are not ready (as during training before the learner readied them); "
              f"it passes the policy through")
    return gate.for_evaluation() if hasattr(gate, "for_evaluation") else gate


def _run_role(config):
    if _ACTOR.value:
        from serl_ext.loop.actor import run_actor
        from serl_ext.loop.common import run_dir_for
        from serl_ext.loop.logging import result_table

        summary = run_actor(config)
        run_dir = run_dir_for(config)
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
        from serl_ext.loop.common import run_dir_for
        from serl_ext.loop.logging import ProcessLog

        process_log = ProcessLog(os.path.join(run_dir_for(config), "logs", f"{role}.log"), quiet=_QUIET.value)
    with process_log as plog:
        # After the console copy is in place, so that log records reach the log file too.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                            force=True)
        # Orbax and friends log every checkpoint step at INFO through absl; keep the console readable.
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("OpenGL").setLevel(logging.WARNING)  # "No OpenGL_accelerate module loaded"
        try:
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
