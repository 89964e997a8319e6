"""Evaluation of one kept checkpoint of a run folder: ``--eval`` of ``serl_ext.loop.main``
(see its docstring) and ``launchers/eval.sh``. A library module, with no absl flags, so that
tests and scripts can import it next to other flag-defining modules.
"""

import os


def evaluate_checkpoint(config, checkpoint_step=None, episodes=None, stochastic=False, gate_mode="auto",
                        videos=0, camera=""):
    """Evaluates one checkpoint of the run folder of ``config`` (module docstring).

    With ``actor.eval_on_training_env`` (a real arm) every episode runs on one env built with
    the human input (its success / failure marks; no takeover, ``evaluation.human_input_off``).

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
    env = None
    if common.eval_on_training_env(config):  # one arm: one env for every episode (success marks on)
        env = common.make_env(config, common.eval_seed(config, 0), with_operator=True)
    try:
        records = run_episodes(agent, config, episodes, gate, stochastic=stochastic, video=video, env=env)
    finally:
        if env is not None:
            env.close()
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
