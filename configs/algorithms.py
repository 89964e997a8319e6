"""Algorithm overrides applied on top of base + task.

``hil_serl``: SAC, critic ensemble 2 (min over both), UTD 2, demos + simulated operator
(HiL-SERL defaults, DESIGN.md section 3). ``rlpd``: ensemble 10 with the min over a random
subset of 2, no operator. ``hil_serl_pixels``: ``hil_serl`` from one 64 px camera image
(``pixels``, Meta-World's ``corner`` camera) plus proprioception with the SmallCNN encoder.
``hil_serl_cameras``: HiL-SERL's camera setup, a ``front`` and a ``wrist`` camera at 128 px plus
proprioception, no privileged object state (Meta-World: ``corner`` and ``gripperPOV``; the
simulated UR5e: robosuite's ``agentview`` and ``robot0_eye_in_hand``); docs/learning_from_pixels.md.
Both pixel presets take their encoder's ``image_keys`` from ``env.cameras`` (a shared field
reference: ``--config.env.cameras="('front',)"`` changes both). ``hil_serl_hybrid``: ``hil_serl`` with HiL-SERL's hybrid
agent (``agent_name="sac_hybrid"``, serl_ext/agents/sac_hybrid.py): the SAC actor drives the arm
(xyz), a DQN gripper critic picks the gripper command in {-1, 0, +1}, trained on reward plus the
grasp penalty (``agent.grasp_num_qs``, ``agent.grasp_target_clip`` are its fields). ``sac``:
plain online SAC, no demos, no operator (a sanity baseline).

``hil_serl+uniintervene``: ``hil_serl`` with the UniIntervene gate in the actor and the online
UniIntervene models on the learner: it adds the ``config.uniintervene`` section
(``uniintervene_jax.online_config.get_online_config``) and names the method's factories in
``config.components`` (:data:`UNIINTERVENE_COMPONENTS`); plain algorithms have neither. Its ablations (paper table,
official ``VARIANT_SPEC`` where it has one): ``-no_future`` (w/o future prediction: no future head
and no future loss, the Q and trigger heads read h_t), ``-no_value`` (w/o value prediction: the
trigger head gets no stop_grad(Q_min) input), ``-no_tvr`` (w/o temporal value-risk: the learned
``binary`` trigger head, focal only, without the TVR target and the value history) and
``-no_memory`` (w/o memory goal: the recovery policy is trained and run with the current
observation as its goal). ``hil_serl+uniintervene-replan1`` (a variant, not a paper ablation):
recovery chunks re-predicted every step from the current observation.

``hil_serl_cameras+uniintervene``: ``hil_serl_cameras`` (front + wrist at 128 px + proprio) with
UniIntervene's models on images, fresh (``uniintervene.init_from=""``; the offline pipeline is
state-only): the proxy value on ``encoder_type="small_cnn"``, the intervention model on
``backbone="cnn"`` (both on the agent's ``image_keys``), the future target a random projection
of 16 x 16-pooled frames (``target_encoder="random:16"``), the recovery policy and the memory on
``[state, z]`` with z the proxy value's latent (``recovery_inputs="state+value_embedding"``,
uniintervene_jax/views.py), 40 kept online episodes; numbers in ``_hil_serl_cameras_uniintervene``.
"""

from typing import Callable, Dict

import ml_collections

from ml_collections.config_dict import placeholder


def camera_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the camera fields to ``config.env`` when missing (every composed config has them).

    * ``env.cameras``: the image observation keys with ``env.image_obs`` (Meta-World tasks),
      one uint8 (S, S, 3) frame each, S = ``env.image_size``: ``"pixels"`` (the historical
      single image, ``corner`` camera), ``"front"`` (``corner``), ``"wrist"`` (``gripperPOV``)
      or any Meta-World camera name (``serl_ext.envs.metaworld_env.CAMERA_KEYS``). Default
      ``("pixels",)``.
    * ``env.camera_crops``: one entry per camera key, None (no crop) or ``(top, bottom, left,
      right)`` as fractions of the rendered frame, applied before the resize to S, e.g.
      ``--config.env.camera_crops.wrist="(0.0, 0.8, 0.1, 0.9)"``
      (``serl_ext.envs.metaworld_env.check_camera_crops`` says what is refused).

    The simulated UR5e takes its cameras (and pixel crops) from ``config.robot.cameras``.
    """
    from serl_ext.envs.metaworld_env import CAMERA_KEYS, PIXELS_KEY

    if "cameras" not in config.env:
        config.env.cameras = (PIXELS_KEY,)
    if "camera_crops" not in config.env:
        config.env.camera_crops = ml_collections.ConfigDict({key: placeholder(tuple) for key in CAMERA_KEYS})
    return config


def _hil_serl(config):
    config.agent.num_qs = 2
    config.agent.num_min_qs = None
    config.learner.utd_ratio = 2
    config.operator.enabled = True
    return config


def _rlpd(config):
    config.agent.num_qs = 10
    config.agent.num_min_qs = 2
    config.learner.utd_ratio = 2
    config.operator.enabled = False
    return config


def _hil_serl_pixels(config):
    """HiL-SERL from a rendered camera image (64 px) plus proprioception, SmallCNN encoder."""
    _hil_serl(config)
    camera_fields(config)
    config.env.image_obs = True
    config.env.image_size = 64
    config.env.cameras = ("pixels",)
    config.agent.encoder.type = "small_cnn"
    # The encoder reads every camera of the env: one field, two names.
    config.agent.encoder.image_keys = config.env.get_ref("cameras")
    config.learner.replay_capacity = 100_000
    config.learner.demo_capacity = 50_000
    return config


#: The simulated UR5e's cameras in ``hil_serl_cameras``: observation key -> robosuite camera.
#: ``agentview`` looks at the table from in front of the robot (cube and gripper large in the
#: frame; ``frontview`` is farther away); ``robot0_eye_in_hand`` is the wrist camera.
UR_SIM_CAMERAS = {"front": "agentview", "wrist": "robot0_eye_in_hand"}


def _hil_serl_cameras(config):
    """HiL-SERL's cameras: front + wrist at 128 px, proprioception only, SmallCNN encoder."""
    from serl_ext.envs.ur_tasks import is_ur_sim_task

    _hil_serl(config)
    camera_fields(config)
    config.agent.encoder.type = "small_cnn"
    if is_ur_sim_task(config.get("task")) and "robot" in config:
        from configs.robots.ur5e import camera

        # Images come from the robot config (the arm's camera rig), not from env.image_obs.
        config.robot.cameras = ml_collections.ConfigDict(
            {key: camera("robosuite", device=device, width=128, height=128, size=(128, 128))
             for key, device in UR_SIM_CAMERAS.items()})
        config.robot.privileged_state = False  # no cube / marker state in the policy's input
        config.agent.encoder.image_keys = tuple(UR_SIM_CAMERAS)
    else:
        config.env.image_obs = True
        config.env.image_size = 128  # 64 (or 32 in tests) with --config.env.image_size
        config.env.state_obs = "proprio"  # hand xyz + gripper opening (4,)
        config.env.cameras = ("front", "wrist")
        config.agent.encoder.image_keys = config.env.get_ref("cameras")
    # 2 cameras x 128 x 128 x 3 bytes = 96 KiB per frame set; the buffers keep up to 2 frame
    # sets per transition slot (docs/learning_from_pixels.md, replay memory): about 9.8 GB for
    # 50k online transitions and 3.9 GB for 20k demo + intervention transitions at most.
    config.learner.replay_capacity = 50_000
    config.learner.demo_capacity = 20_000
    return config


def _hil_serl_hybrid(config):
    """``hil_serl`` with the hybrid agent: SAC for the arm, DQN for the gripper."""
    from serl_ext.agents.sac_hybrid import get_default_config as get_hybrid_config

    _hil_serl(config)
    config.agent_name = "sac_hybrid"
    hybrid = get_hybrid_config()
    # The gripper fields, so that --config.agent.grasp_num_qs=... works (defaults from the agent).
    for name in ("grasp_num_qs", "grasp_target_clip"):
        config.agent[name] = hybrid.get_ref(name) if hybrid[name] is None else hybrid[name]
    return config


def _sac(config):
    _hil_serl(config)
    config.operator.enabled = False
    config.demos.num_demos = 0
    config.learner.demo_fraction = 0.0
    return config


# The method's pieces, as import strings (serl_ext/loop/components.py builds them; the
# infrastructure never imports the method).
UNIINTERVENE_COMPONENTS = {
    "gate": "uniintervene_jax.gate:make_gate",
    "learner_extension": "uniintervene_jax.extension:make_learner_extension",
}


def _hil_serl_uniintervene(config):
    from uniintervene_jax.online_config import get_online_config

    _hil_serl(config)
    config.uniintervene = get_online_config()
    config.uniintervene.enabled = True
    for name, spec in UNIINTERVENE_COMPONENTS.items():
        config.components[name] = spec
    return config


def _hil_serl_cameras_uniintervene(config):
    """``hil_serl_cameras`` + UniIntervene with image models (docs/learning_from_pixels.md)."""
    _hil_serl_cameras(config)
    _hil_serl_uniintervene(config)
    u = config.uniintervene
    # The cameras the agent's encoder reads (a reference: --config.env.cameras on Meta-World,
    # the robot's camera rig on the UR5e sim task) are the UniIntervene models' cameras too.
    cameras = config.agent.encoder.get_ref("image_keys")
    # Proxy value V(o, l): SmallCNN per camera (stride 2 x 4, channels 16-32-64-64, 64-d per
    # camera) + the proprio state (4-D on Meta-World, UREnv's 19-D on the UR5e). Its latent z
    # (value.latent_dim = 128) is the memory's retrieval key and the recovery policy's only
    # image input (below). Its update sees 2 x batch_size frame sets (o, o'), random-crop
    # augmented.
    u.value.encoder.type = "small_cnn"
    u.value.encoder.image_keys = cameras
    u.value.encoder.widths = (16, 32, 64, 64)
    u.value.encoder.latent_dim = 64
    # Intervention model: the CNN backbone (SmallCNN 16-32-32 per camera, 64-d each, + state).
    u.intervention.model.backbone = "cnn"
    u.intervention.model.image_keys = cameras
    # Future head target: a frozen random projection of the frames average-pooled to 16 x 16
    # (128 px: 8 x 8 blocks) plus the state, F = 2 x 768 + 4 = 1,540 -> D = 128: a 0.8 MB
    # matrix instead of 50 MB for the raw 2 x 49,152 pixels.
    u.target_encoder = "random:16"
    # Recovery policy and memory on the recovery view [state, z] (uniintervene_jax/views.py):
    # S + 128 floats per observation, S = 4 on Meta-World (132 floats, 528 B), 19 on the UR5e.
    # No CNN of its own (it would add 4 updates x 2 x 128 frame sets per round); its goal is the
    # memory item's [goal state, goal z]. A memory item costs about 2.8 KB on Meta-World (key and
    # goal views 2 x 528 B, goal state = goal view 528 B, key and goal embeddings 2 x 512 B,
    # 8 x 4 actions 128 B): 120 items ~ 0.33 MB in every payload, against 23.6 MB for their key
    # and goal frame sets at 128 px (120 x 2 x 98,304 B). A recovery pair is 2 x 528 B.
    u.recovery_inputs = "state+value_embedding"
    # Kept online episodes: a frame set (2 x 128 x 128 x 3 B + state) is 98,320 B, kept in the
    # episode and once more in the intervention dataset: a 125-step pick-place failure holds
    # 2 x 126 x 98,320 B = 24.8 MB, so 40 episodes <= 1.0 GB (+ ~60 MB for 20 demos of ~15
    # steps), against 5 GB with the state preset's max_episodes = 200. Each refresh (every 10
    # episodes) re-scores all kept frames with the CNNs (value curve, z, target latent).
    u.max_episodes = 40
    # The learner pre-trains the CNN value and intervention models on the demos before it serves
    # (minutes on a CPU); the throttled actor waits for it instead of running its first episodes
    # unheld (the state preset's 120 s ran out in a 32 px smoke run of benchmarks/pixels.py).
    config.actor.wait_for_learner_s = 900.0
    return config


def _ablation(**fields):
    def apply(config):
        _hil_serl_uniintervene(config)
        for name, value in fields.items():
            if name == "use_memory_goal":  # the gate's ablation, not the intervention model's
                config.uniintervene.use_memory_goal = value
            else:
                config.uniintervene.intervention[name] = value
        return config

    return apply


UNIINTERVENE_ABLATIONS = {
    "hil_serl+uniintervene-no_future": dict(use_future=False),
    "hil_serl+uniintervene-no_value": dict(use_value_cond=False),
    "hil_serl+uniintervene-no_tvr": dict(head_type="binary"),
    "hil_serl+uniintervene-no_memory": dict(use_memory_goal=False),
}

def _hil_serl_uniintervene_replan1(config):
    """``hil_serl+uniintervene`` with receding-horizon recovery chunks (re-predicted every step)."""
    _hil_serl_uniintervene(config)
    config.uniintervene.replan_every = 1
    return config


ALGORITHMS: Dict[str, Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict]] = {
    "hil_serl": _hil_serl,
    "hil_serl_pixels": _hil_serl_pixels,
    "hil_serl_cameras": _hil_serl_cameras,
    "hil_serl_hybrid": _hil_serl_hybrid,
    "rlpd": _rlpd,
    "sac": _sac,
    "hil_serl+uniintervene": _hil_serl_uniintervene,
    "hil_serl+uniintervene-replan1": _hil_serl_uniintervene_replan1,
    "hil_serl_cameras+uniintervene": _hil_serl_cameras_uniintervene,
    **{name: _ablation(**fields) for name, fields in UNIINTERVENE_ABLATIONS.items()},
}


def apply_algorithm(config: ml_collections.ConfigDict, algorithm: str) -> ml_collections.ConfigDict:
    """Sets ``config.algorithm`` and applies its overrides.

    Raises:
      KeyError: unknown algorithm (the message lists the known ones).
    """
    if algorithm not in ALGORITHMS:
        raise KeyError(f"Unknown algorithm {algorithm!r}; known: {sorted(ALGORITHMS)}")
    config.algorithm = algorithm
    camera_fields(config)
    return ALGORITHMS[algorithm](config)


def algorithm_components(algorithm: str) -> Dict[str, str]:
    """What the algorithm plugs into the loop: ``{"agent": config.agent_name, "gate": import
    string or "", "learner_extension": import string or ""}`` (serl_ext/loop/components.py).

    Raises:
      KeyError: unknown algorithm.
    """
    from configs.base import get_base_config

    config = apply_algorithm(get_base_config(), algorithm)
    return {"agent": str(config.agent_name), "gate": str(config.components.gate),
            "learner_extension": str(config.components.learner_extension)}
