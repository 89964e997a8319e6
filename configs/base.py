"""Base training config shared by every task and algorithm.

Composition (STYLE.md, rlpd-style): ``configs/train.py:get_config("TASK,ALGO")`` starts from
:func:`get_base_config`, applies the task overrides from ``configs/tasks.py`` and then the
algorithm overrides from ``configs/algorithms.py``. Every field can be overridden from the
command line, e.g. ``--config.seed=1 --config.learner.utd_ratio=4``.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    """Returns the base ConfigDict; every field is documented inline."""
    from serl_ext.agents.sac import get_default_config as get_sac_config
    from serl_ext.envs.operator import get_default_operator_config

    config = ml_collections.ConfigDict()
    config.seed = 0  # Seeds the agent, the env layouts, the operator noise and the buffers.
    config.task = "pick-place"  # Stand-in task name (see serl_ext/envs/tasks.py).
    config.algorithm = "hil_serl"  # Name written to summary.json; set by configs/algorithms.py.
    config.run_root = "runs"  # Run folders are created under this directory.
    config.run_name = ""  # Default: "{task}/{algorithm}/seed{seed}". Same name => resume.

    # Environment (Meta-World through serl_ext.envs.make_env).
    config.env = ml_collections.ConfigDict()
    config.env.action_repeat = 4  # Sim steps per agent step (80 Hz / 4 = 20 Hz control).
    config.env.max_episode_steps = ml_collections.config_dict.placeholder(int)  # None: task default.
    config.env.reward_type = "sparse"  # "sparse": 1 on success then terminate; "dense": shaped.
    config.env.image_obs = False  # Add a rendered "pixels" uint8 (S, S, 3) observation.
    config.env.image_size = 64  # S in pixels when image_obs.
    # Reward classifier folder (launchers/train_reward_classifier.py): the actor's training env
    # takes its reward and termination from it (serl_ext/envs/reward_classifier.py); "" = the
    # simulator's success flag. Evaluation keeps the true success.
    config.env.reward_classifier = ""
    # Threshold on p(success); None = the one stored with the classifier.
    config.env.reward_classifier_threshold = ml_collections.config_dict.placeholder(float)
    # "full": 39-D Meta-World state; "proprio": hand xyz + gripper; None: full without images,
    # proprio with images.
    config.env.state_obs = ml_collections.config_dict.placeholder(str)

    # Who can take over in the actor: "simulated" (the operator below), "keyboard" (a person at
    # the actor's terminal: w/s a/d r/f move, space toggles the gripper), "spacemouse"
    # (pyspacemouse, `pip install -e .[robot]`) or "none".
    config.human_input = "simulated"
    # Simulated human operator (DESIGN.md section 6). enabled=False: no interventions at all.
    config.operator = get_default_operator_config()
    config.operator.enabled = True

    # Agent (SAC with the RLPD options; serl_ext/agents/sac.py documents each field).
    config.agent_name = "sac"  # "sac" | "sac_hybrid" | "bc".
    config.agent = get_sac_config()
    config.agent.discount = 0.97
    config.agent.critic_target_clip = (0.0, 1.0)  # Sparse 0/1 reward: clip TD target to [0, 1].

    # Demonstrations (episode files written by launchers/collect_demos.py).
    config.demos = ml_collections.ConfigDict()
    # Default: "demos/{task}{observation tag}" (relative to the working directory; the tag is
    # empty for state observations: serl_ext/loop/demo_folders.py).
    config.demos.path = ""
    config.demos.num_demos = 20  # Successful scripted demos collected when the folder is empty.

    # Learner process.
    config.learner = ml_collections.ConfigDict()
    config.learner.batch_size = 256  # Total batch; half online, half demo+intervention (RLPD).
    config.learner.demo_fraction = 0.5  # Share of each batch drawn from the demo buffer.
    config.learner.utd_ratio = 2  # Critic updates per learner step (HiL-SERL cta_ratio).
    config.learner.training_starts = 1000  # Online transitions needed before the first update.
    config.learner.replay_capacity = 200_000  # Online buffer size (transitions).
    config.learner.demo_capacity = 100_000  # Demo + intervention buffer size (transitions).
    config.learner.publish_period = 50  # Learner steps between parameter pushes.
    config.learner.log_period = 100  # Learner steps between train/ log writes.
    config.learner.checkpoint_period = 5_000  # Learner steps between checkpoints (0: only at end).
    # Newest checkpoints kept (0: all; the fallback to an older intact step needs >= 2). Every
    # kept step can be evaluated: launchers/eval.sh --checkpoint_step=N.
    config.learner.checkpoints_to_keep = 2
    config.learner.max_steps = 1_000_000  # Hard cap on learner steps.
    config.learner.idle_timeout_s = 0.0  # >0: stop when no actor data arrived for this long.
    # Hold the learner to the actor: it waits while its step is above (online transitions
    # received - training_starts) / actor.steps_per_update + hold_slack. The actor's throttle
    # keeps env steps from running ahead of the learner; this keeps the learner from running
    # ahead while the actor evaluates or is slowed, so every method gets the same learner steps
    # per env step. False (or actor.steps_per_update = 0): upstream HiL-SERL, not held.
    config.learner.hold_to_actor = True
    config.learner.num_actors = 1  # Actors feeding this learner; the run ends once all are done.
    config.learner.hold_slack = 200  # Learner steps the learner may run ahead of the ratio.
    # Data-parallel learner update (serl_ext/agents/data_parallel.py): 0 or 1 = off; N >= 2 splits
    # every batch over the first N devices (parameters replicated); batch_size must be a multiple.
    config.learner.data_parallel_devices = 0
    # Frozen image backbone (agent.encoder.freeze): compute its feature maps once per stored
    # frame (ReplayBuffer.attach_frame_features) instead of once per sampled use, and update the
    # encoder's head only (SACAgent.update(frame_features=True)). Exact, and far cheaper on CPU
    # (benchmarks/results/pixel_update.md), but needs agent.encoder.augmentation="none": HiL-SERL
    # random-crops the frames before its frozen ResNet-10, which a per-frame cache cannot do.
    config.learner.cache_frame_features = False
    # Liveness: no message from the actor for this long (s) => the learner logs that the actor
    # seems to have stopped and counts it (learner_summary.json actor_silences); it keeps serving
    # (idle_timeout_s stops it). Above the actor's longest silent phase (its evaluations). 0: off.
    config.learner.actor_timeout_s = 300.0
    # Divergence guard: an update whose loss or new parameters are non-finite is skipped and the
    # last good agent kept (train/divergence_recoveries); after this many in a row the agent
    # (not the buffers) is restored from the newest intact checkpoint (train/divergence_restores).
    config.learner.divergence_restore_after = 10
    # More restores than this in one learner process stop it with an error (training does not
    # recover; lower the learning rates or check the data).
    config.learner.max_divergence_restores = 5
    # After the final checkpoint, wait up to this long (s) for the actor to confirm that it took
    # the acknowledgement (its actor_closed request) before the transport stops.
    config.learner.final_ack_wait_s = 30.0

    # Actor process.
    config.actor = ml_collections.ConfigDict()
    config.actor.max_env_steps = 50_000  # Agent steps (after action repeat) of the whole run.
    # Several actors into one learner (robots or simulated workers): actor k of
    # learner.num_actors runs its share of max_env_steps with its own episode seeds, files in
    # {run_dir}/actors/actor{k}/ and transport name; actor 0 is the primary: it evaluates and
    # writes {run_dir}/summary.json. Every actor and the learner get the same num_actors.
    config.actor.actor_id = 0
    config.actor.send_period = 50  # Env steps between transport flushes to the learner.
    # Transitions kept until the learner has them in a checkpoint (durable acknowledgement), also
    # while the learner is away; must cover one learner checkpoint period (overflow drops the
    # oldest, counted in rollout/dropped_transitions).
    config.actor.queue_capacity = 50_000
    config.actor.eval_period = 5_000  # Env steps between evaluations (0: only at the end).
    config.actor.eval_episodes = 10  # Deterministic episodes per evaluation (fresh seeded envs).
    config.actor.eval_seed_offset = 100_000  # Eval env seed = seed * 1000 + offset + episode index.
    # Keep env steps within `steps_per_update` per learner step (+ slack) of the learner, so the
    # async run keeps the data/update ratio of the single-process RLPD probe. 0 disables it (the
    # original HiL-SERL behaviour); the throttle is lifted while the learner is unreachable.
    config.actor.steps_per_update = 1.0
    config.actor.throttle_slack = 200
    # Write every training episode to {run_dir}/episodes/rollout_NNNNNN.npz (episodes.py format).
    config.actor.save_episodes = False
    # True: an episode cut by the time limit bootstraps (mask 1; Pardo et al. 2018). False:
    # the time limit is terminal (mask 0), as in HiL-SERL's robot envs, which set done=True at
    # the episode-length limit (README, "HiL-SERL fidelity").
    config.actor.bootstrap_at_time_limit = True
    config.actor.learner_timeout_s = 10.0  # No params for this long => learner considered away.
    # With the throttle on, wait up to this long at start for the learner's first parameters
    # (0: act at once). Keeps methods whose learner starts slower (pretraining) comparable.
    config.actor.wait_for_learner_s = 120.0
    # At the end: wait up to this long (s) for the last transitions to be delivered and then
    # acknowledged by the learner's final checkpoint (summary.json transport_items_*).
    config.actor.final_ack_timeout_s = 120.0
    # Sensor faults (a non-finite or out-of-bound observation or reward, a non-finite or
    # out-of-bound action) end the episode and are counted; this many in a row without a good
    # step in between stop the actor with an error (a dead sensor, not a glitch).
    config.actor.max_consecutive_faults = 100
    # A reset the env refuses until a person acts (serl_ext.errors.ResetBlockedError: an emergency
    # or protective stop on a real arm) is retried every blocked_reset_retry_s seconds, the queue
    # still delivered meanwhile; after blocked_reset_timeout_s of one wait (0: no limit) the actor
    # stops with the env's message.
    config.actor.blocked_reset_retry_s = 5.0
    config.actor.blocked_reset_timeout_s = 3600.0
    # Selectivity window N in env steps (serl_ext/loop/sources.py): a gate's recovery onset and an
    # operator takeover onset pair up when the takeover starts 1..N steps after the onset
    # (selectivity/ per episode, trigger_onset_precision / _recall in summary.json).
    config.actor.selectivity_window = 10

    # Transport (serl_ext/transport).
    config.transport = ml_collections.ConfigDict()
    config.transport.ip = "127.0.0.1"  # Learner address as seen from the actor.
    config.transport.bind_address = "127.0.0.1"  # Learner bind address ("0.0.0.0" for 2 hosts).
    config.transport.port = 5588
    config.transport.broadcast_port = 5589
    # Shared key (>= 16 bytes) authenticating every message (HMAC-SHA256, serl_ext/transport/
    # auth.py): a file path here, else $SERL_TRANSPORT_KEY_FILE or $SERL_TRANSPORT_KEY (the key
    # itself); never the key on the command line. Required when bind_address / ip is not
    # loopback; optional on loopback (used when set). Same key on both machines.
    config.transport.auth_key_file = ""
    config.transport.auth = "auto"  # "auto" (key needed off loopback) or "required" (always).
    config.transport.max_clock_skew_s = 120.0  # Authenticated frames older/newer are refused, s.

    # What the algorithm adds to the loop (serl_ext/loop/components.py), as import strings
    # "package.module:factory", "" for none; set by configs/algorithms.py. A method's own
    # settings live in its own section, which its algorithm config adds.
    config.components = ml_collections.ConfigDict()
    config.components.gate = ""  # Actor gate factory; "": pass-through (plain HiL-SERL).
    config.components.learner_extension = ""  # Learner extension factory; "": none.

    # Logging.
    config.logging = ml_collections.ConfigDict()
    config.logging.tensorboard = True
    config.logging.progress_bar = True  # The actor's one status line (env steps, SR20, IR, learner step).
    # Copy each process's console into {run_dir}/logs/{actor,learner,eval}.log (appended).
    config.logging.log_file = True
    # Weights & Biases beside tensorboard (same keys and steps; `pip install -e .[wandb]`). Actor
    # and learner are two wandb runs: name "{wandb_name}/{role}", group wandb_group, tags task,
    # algorithm, role + wandb_tags; local files in {run_dir}/wandb.
    config.logging.wandb = False
    config.logging.wandb_project = "serl_ext"
    config.logging.wandb_entity = ""  # "": your default entity.
    config.logging.wandb_mode = ""  # "online" | "offline" | "disabled"; "": $WANDB_MODE or online.
    config.logging.wandb_name = ""  # "": the run name "{task}/{algorithm}/seed{seed}" (or run_name).
    config.logging.wandb_group = ""  # "": the run name (actor and learner of one run together).
    config.logging.wandb_tags = ()  # Extra tags (a tuple of strings).
    # Evaluation videos (mp4 in {run_dir}/videos, logged as eval/video; `pip install -e .[video]`):
    # the first video_episodes episodes of every video_period-th evaluation (0: none while
    # training; launchers/eval.sh --videos=N films on demand). Gated methods' system evaluations
    # get a side plot of the gate's step_info() (value, risk, trigger).
    config.logging.video_period = 0
    config.logging.video_episodes = 1
    config.logging.video_camera = "corner"  # Meta-World: corner, corner2-4, topview, behindGripper, gripperPOV.
    config.logging.video_size = 256  # Frame width and height in pixels (a multiple of 16).
    config.logging.video_fps = 20  # One frame per agent step: 20 = the 20 Hz control rate.
    return _typed_placeholders(config)


# Fields whose default is None: give them a type so that `--config.FIELD=VALUE` can set them
# from the command line (ml_collections refuses to parse a flag for a plain None field).
_PLACEHOLDER_TYPES = {
    "agent.encoder.pretrained_path": str,
    "agent.encoder.widths": tuple,
    "agent.num_min_qs": int,
    "agent.target_entropy": float,
    "operator.stall_window": int,
}


def _typed_placeholders(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    for path, field_type in _PLACEHOLDER_TYPES.items():
        *parents, leaf = path.split(".")
        node = config
        for name in parents:
            node = node[name]
        if leaf in node and node[leaf] is None:
            node[leaf] = ml_collections.config_dict.placeholder(field_type)
    return config
