"""HiL-SERL from pixels (issue 17 item 5): frozen pretrained encoder against from scratch, plus one
run whose reward is the reward classifier's; resumable, one commit per finished run.

  nice -n 19 python benchmarks/pixels.py --commit                       # the whole benchmark
  python benchmarks/pixels.py --dry_run                                 # print every command
  python benchmarks/pixels.py --report_only                             # report from what is on disk
  python benchmarks/pixels.py --tasks=pick-place --seeds=0 --budgets=pick-place:200 \\
      --out=/tmp/px -- --config.learner.training_starts=50              # extra --config flags

Stages (each skipped when its outputs exist, so the command resumes; an interrupted run restarts
from scratch for clean timings):

1. ``OUT/weights/TASK-ENCODER-S``: ``launchers/pretrain_encoder.py`` on the task's own rendered
   frames: for ``hil_serl_cameras`` from both of its cameras (``--image_keys=front,wrist``, half
   the frames each), since the one weights folder is loaded into every camera's backbone; for
   ``hil_serl_pixels`` from ``--pretrain_camera`` (``corner``, what ``pixels`` renders). That launcher renders Meta-World only: a UR task
   (``ur5e-sim-lift``) uses the weights of ``--ur_weights_task`` (pick-place; robosuite frames
   were never seen by them, the report says so).
2. ``OUT/classifier/TASK-S-KEY``: ``launchers/train_reward_classifier.py`` for
   ``--classifier_task`` (pick-place) on the preset's first camera (``front`` for
   ``hil_serl_cameras``), frozen on the stage-1 backbone; held-out accuracy / precision / recall
   in its ``metrics.{json,md}``.
3. Runs, ``bash launchers/run_task.sh TASK,PRESET --config.run_root=OUT/runs/VARIANT
   --config.seed=S ...`` (learner and actor as two processes on this machine, 20 scripted demos,
   the simulated operator), each with ``--eval_episodes`` deterministic evaluations every
   ``--eval_period`` env steps; run folder ``OUT/runs/VARIANT/TASK/PRESET/seedS``, log
   ``OUT/logs/log_VARIANT_TASK_seedS.txt``. Variants (:data:`VARIANTS`):

   =================  ==============================================================
   ``frozen``         ``--frozen_encoder`` (resnet10, HiL-SERL's) from stage 1, frozen;
                      ``--frozen_features`` cached (default) or per_update (Budgets)
   ``scratch``        ``--scratch_encoder`` (small_cnn, the presets' default), trained
                      from scratch
   ``classifier_reward``  ``frozen`` + ``--config.env.reward_classifier=`` stage 2; only
                      on ``--classifier_task`` seed 0
   ``uniintervene``   ``PRESET+uniintervene`` (UniIntervene's proxy value and intervention
                      model on the camera frames, trained online from fresh parameters, the
                      gate in the actor), the scratch encoder and budget; only on
                      ``--uniintervene_task`` seed 0, after every other run; the report gives
                      its trigger rate, IR and SR with and without the gate
   =================  ==============================================================

Budgets. The actor is held to one learner step per env step (``actor.steps_per_update = 1``),
so a run costs about (learner ms per update) x (env steps). Quiet timings of the update
(``benchmarks/bench_pixel_update.py``, ``benchmarks/results/pixel_update_scan.md``, two 64 px
cameras + 4-D proprio, UTD 2, batch 32): SmallCNN trained from scratch 271 ms; the frozen
ResNet-10 2719 ms when, as in HiL-SERL, every update random-crops its frames and runs the
backbone on each (``--frozen_features=per_update``): 2500 env steps were about 2 h per run, and
this benchmark's first plan was cut to that. The default ``--frozen_features=cached`` computes
each stored frame's feature maps once (``learner.cache_frame_features``, exact for a frozen
backbone, but without the random-crop augmentation, which a per-frame cache cannot apply) and
updates the encoder head only: 42 ms per update plus 21.6 ms of backbone per new frame of both
cameras, against 2590 ms per update for per_update in the same quiet run
(``benchmarks/results/pixel_update_cached.md``), ~40x less per env step. The defaults therefore give the frozen variants the
state row's budget on the UR task and 30k of its 50k on pick-place (the state row reached SR 0.8
at ~30k), ``--budgets=pick-place:30000,ur5e-sim-lift:20000``, and the from-scratch variant
``--scratch_budgets=pick-place:10000,ur5e-sim-lift:10000`` (256 ms per update against the cached 42 + 21.6 ms, ~4x per env step;
the report says it ran shorter); batch ``--batch_size=32`` for both (HiL-SERL: 256). Raise them
with ``--budgets``, ``--scratch_budgets`` and ``--batch_size`` where more CPU (or a GPU learner,
``benchmarks/bench_gpu_learner.py``) is available.

Report (``OUT/results.md``, ``results.json``, ``curves.png``): per task and variant over its
seeds, the median and mean evaluation SR at each evaluation step, the env steps and minutes (run
wall clock) to the first evaluation with SR >= 0.8 (never counts as +inf: the median is "-" when
more than half never got there), the learner's updates per second (``learner_summary.json``),
replay bytes per transition against one frame set (:func:`replay_bytes`), and for the classifier
run the training episodes' classifier success (``rollout/return`` > 0: the classifier reward is
1.0 on its first positive step and the episode ends there) against their true success
(``rollout/success``, the simulator's flag, which ``RewardClassifierWrapper`` leaves in
``info["success"]`` and ``info["true_success"]``); its evaluations use the simulator's success.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.comparison.aggregate import mean as _mean  # noqa: E402
from benchmarks.comparison.aggregate import median as _median  # noqa: E402
from benchmarks.comparison.load import read_json, read_jsonl  # noqa: E402
from benchmarks.comparison.render import _fmt as fmt  # noqa: E402
from benchmarks.fidelity import median_to_target  # noqa: E402
from benchmarks.hil_serl import parse_budgets  # noqa: E402
from benchmarks.run_metrics import steps_to  # noqa: E402

TARGET_SR = 0.8
DEFAULT_OUT = "benchmarks/results/pixels"
DEFAULT_TASKS = ("pick-place", "ur5e-sim-lift")
DEFAULT_BUDGETS = "pick-place:30000,ur5e-sim-lift:20000"
# The from-scratch variant's budgets (capped at --budgets): its update trains the CNN, ~4x the
# cached frozen update's cost (docstring, "Budgets").
DEFAULT_SCRATCH_BUDGETS = "pick-place:10000,ur5e-sim-lift:10000"
# How the frozen variants meet their backbone (--frozen_features): "cached" = each stored frame's
# feature maps once (learner.cache_frame_features, augmentation off); "per_update" = HiL-SERL's
# recipe, random crop and the backbone on every sampled frame in every update.
FROZEN_FEATURES = {
    "cached": ["--config.agent.encoder.augmentation=none", "--config.learner.cache_frame_features=True"],
    "per_update": [],
}
# State-based HiL-SERL row's budgets (README), against which the report states the cut.
STATE_ROW_BUDGETS = {"pick-place": 50_000, "ur5e-sim-lift": 20_000}
VARIANTS = ("frozen", "scratch", "classifier_reward", "uniintervene")
# Proprioception width per task family (the preset's ``state``): Meta-World hand xyz + gripper,
# the simulated UR5e's TCP pose / velocity / wrench / gripper (docs/learning_from_pixels.md).
STATE_DIMS = {"metaworld": 4, "ur": 19}
# Bytes of a stored transition besides its frames: two int64 frame numbers, 4 float32 actions,
# reward, mask, grasp penalty (float32), done, intervention and action-source bytes
# (serl_ext/data/replay_buffer.py; docs/learning_from_pixels.md, "Replay memory").
TRANSITION_OVERHEAD_BYTES = 47


def is_ur(task: str) -> bool:
    """Whether ``task`` is a UR arm task (``serl_ext.envs.ur_tasks``; its cameras live in
    ``config.robot``)."""
    from serl_ext.envs.ur_tasks import is_ur_task

    return bool(is_ur_task(task))


def camera_keys(task: str, preset: str) -> List[str]:
    """The image observation keys of ``preset`` on ``task``: ``["pixels"]`` for
    ``hil_serl_pixels``, ``["front", "wrist"]`` for ``hil_serl_cameras``.

    Raises ValueError for another preset, or ``hil_serl_pixels`` on a UR task (it has no
    ``pixels`` camera)."""
    if preset == "hil_serl_cameras":
        return ["front", "wrist"]
    if preset == "hil_serl_pixels":
        if is_ur(task):
            raise ValueError(f"{task} has no 'pixels' camera; use --preset=hil_serl_cameras")
        return ["pixels"]
    raise ValueError(f"--preset must be hil_serl_cameras or hil_serl_pixels, got {preset!r}")


def replay_bytes(image_shapes: Sequence[Sequence[int]], state_dim: int,
                 mean_episode_length: Optional[float], feature_bytes_per_frame: int = 0) -> Dict[str, Optional[float]]:
    """Replay memory of one stored transition, from the buffer's layout.

    The frame store keeps every observation once (``next_observations`` are the next frame's
    number), so an episode of T transitions holds T + 1 frame sets.

    Args:
      image_shapes: ``(H, W, C)`` of every camera, uint8.
      state_dim: float32 proprioception width.
      mean_episode_length: T, transitions per episode (None: unknown).
      feature_bytes_per_frame: the learner's cached backbone maps per frame set
        (``learner_summary.json`` ``frame_feature_bytes_per_frame``, 0 without the cache),
        kept for every stored frame set beside it.
    Returns:
      ``frame_set_bytes`` (sum of H W C + 4 state_dim), ``transition_bytes`` = (frame set +
      cached features) x (1 + 1 / T) + :data:`TRANSITION_OVERHEAD_BYTES` (None without T),
      ``per_frame_set`` (its ratio to the frame set) and ``feature_bytes_per_frame``.
    """
    frame = int(sum(int(np.prod(s)) for s in image_shapes)) + 4 * int(state_dim)
    feats = int(feature_bytes_per_frame)
    if not mean_episode_length:
        return {"frame_set_bytes": frame, "transition_bytes": None, "per_frame_set": None,
                "feature_bytes_per_frame": feats}
    per = (frame + feats) * (1.0 + 1.0 / float(mean_episode_length)) + TRANSITION_OVERHEAD_BYTES
    return {"frame_set_bytes": frame, "transition_bytes": per, "per_frame_set": per / frame,
            "feature_bytes_per_frame": feats}


# --------------------------------------------------------------------------- paths and commands


def weights_task(task: str, ur_weights_task: str) -> str:
    """The task whose frames the frozen encoder of ``task`` is pre-trained on."""
    return ur_weights_task if is_ur(task) else task


def weights_dir(out: str, task: str, encoder: str, size: int) -> str:
    """``OUT/weights/TASK-ENCODER-S`` (a launchers/pretrain_encoder.py folder)."""
    return os.path.join(out, "weights", f"{task}-{encoder}-{int(size)}")


def classifier_dir(out: str, task: str, size: int, key: str) -> str:
    """``OUT/classifier/TASK-S-KEY`` (a launchers/train_reward_classifier.py folder)."""
    return os.path.join(out, "classifier", f"{task}-{int(size)}-{key}")


def run_dir(out: str, variant: str, task: str, preset: str, seed) -> str:
    """``OUT/runs/VARIANT/TASK/PRESET/seedS`` (run_task.sh with run_root OUT/runs/VARIANT)."""
    return os.path.join(out, "runs", variant, task, preset, f"seed{int(seed)}")


def log_path(out: str, variant: str, task: str, seed) -> str:
    return os.path.join(out, "logs", f"log_{variant}_{task}_seed{int(seed)}.txt")


def pretrain_camera_flags(args, task: str) -> List[str]:
    """The pre-training frames' cameras: the preset's camera keys (``--image_keys``), or
    ``--camera=--pretrain_camera`` for the single ``pixels`` key."""
    keys = camera_keys(task, args.preset)
    if keys == ["pixels"]:
        return [f"--camera={args.pretrain_camera}"]
    return [f"--image_keys={','.join(keys)}"]


def pretrain_command(args, out: str, task: str) -> List[str]:
    """The ``launchers/pretrain_encoder.py`` call writing :func:`weights_dir`."""
    return [sys.executable, "launchers/pretrain_encoder.py", f"--task={task}",
            f"--out={weights_dir(out, task, args.frozen_encoder, args.image_size)}",
            f"--encoder={args.frozen_encoder}", f"--size={args.image_size}",
            *pretrain_camera_flags(args, task), f"--frames={args.pretrain_frames}",
            f"--steps={args.pretrain_steps}", *args.pretrain_flags]


def classifier_command(args, out: str) -> List[str]:
    """The ``launchers/train_reward_classifier.py`` call writing :func:`classifier_dir`."""
    task = args.classifier_task
    key = camera_keys(task, args.preset)[0]
    return [sys.executable, "launchers/train_reward_classifier.py", f"--task={task}",
            f"--out={classifier_dir(out, task, args.image_size, key)}", f"--size={args.image_size}",
            f"--image_key={key}", f"--episodes={args.classifier_episodes}",
            f"--steps={args.classifier_steps}",
            f"--encoder_weights={weights_dir(out, weights_task(task, args.ur_weights_task), args.frozen_encoder, args.image_size)}",
            *args.classifier_flags]


def image_size_flags(task: str, preset: str, size: int) -> List[str]:
    """``--config`` flags setting every camera to ``size`` x ``size``: ``env.image_size`` on
    Meta-World, each ``robot.cameras.KEY`` (capture width / height and observation size) on a
    UR task."""
    if not is_ur(task):
        return [f"--config.env.image_size={int(size)}"]
    flags = []
    for key in camera_keys(task, preset):
        flags += [f"--config.robot.cameras.{key}.width={int(size)}",
                  f"--config.robot.cameras.{key}.height={int(size)}",
                  f"--config.robot.cameras.{key}.size=({int(size)}, {int(size)})"]
    return flags


def run_preset(args, variant: str) -> str:
    """The preset a run of ``variant`` starts: ``--preset``, and for ``uniintervene`` the preset
    with UniIntervene on images (``hil_serl_cameras+uniintervene``)."""
    return f"{args.preset}+uniintervene" if variant == "uniintervene" else args.preset


def variant_flags(args, out: str, variant: str, task: str) -> List[str]:
    """The encoder (and reward) ``--config`` flags of ``variant`` on ``task``."""
    if variant in ("scratch", "uniintervene"):
        return [f"--config.agent.encoder.type={args.scratch_encoder}"]
    wdir = weights_dir(out, weights_task(task, args.ur_weights_task), args.frozen_encoder, args.image_size)
    flags = [f"--config.agent.encoder.type={args.frozen_encoder}",
             f"--config.agent.encoder.pretrained_path={wdir}", "--config.agent.encoder.freeze=True",
             *FROZEN_FEATURES[args.frozen_features]]
    if variant == "classifier_reward":
        key = camera_keys(task, args.preset)[0]
        flags.append(f"--config.env.reward_classifier={classifier_dir(out, task, args.image_size, key)}")
    return flags


def budget_of(args, variant: str, task: str) -> int:
    """Env steps of one run: ``--budgets``, or for ``scratch`` (and ``uniintervene``, whose SAC
    encoder also trains from scratch) the ``--scratch_budgets`` entry (when it has one) capped at
    ``--budgets``."""
    budget = int(args.budgets[task])
    if variant in ("scratch", "uniintervene") and task in args.scratch_budgets:
        return min(budget, int(args.scratch_budgets[task]))
    return budget


def run_command(args, out: str, variant: str, task: str, seed, extra: Sequence[str]) -> List[str]:
    """The ``launchers/run_task.sh`` call of one run (module docstring)."""
    cmd = ["bash", "launchers/run_task.sh", f"{task},{run_preset(args, variant)}",
           f"--config.seed={int(seed)}", f"--config.run_root={os.path.join(out, 'runs', variant)}",
           f"--config.actor.eval_period={args.eval_period}",
           f"--config.actor.eval_episodes={args.eval_episodes}",
           f"--config.actor.max_env_steps={budget_of(args, variant, task)}",
           f"--config.learner.batch_size={args.batch_size}",
           "--config.logging.progress_bar=False",
           *image_size_flags(task, args.preset, args.image_size),
           *variant_flags(args, out, variant, task)]
    return cmd + list(extra)


def planned_runs(args) -> List[tuple]:
    """``(variant, task, seed)`` of every run, seed-major (all of seed 0 first, so a sweep cut
    short leaves every variant with the same seeds); the classifier run after seed 0; the one
    ``uniintervene`` run (``--uniintervene_task``, seed 0) last."""
    runs = []
    for seed in args.seeds:
        for task in args.tasks:
            for variant in args.variants:
                if variant == "classifier_reward":
                    if task == args.classifier_task and int(seed) == 0:
                        runs.append((variant, task, seed))
                elif variant != "uniintervene":
                    runs.append((variant, task, seed))
    if "uniintervene" in args.variants and args.uniintervene_task in args.tasks and 0 in [int(x) for x in args.seeds]:
        runs.append(("uniintervene", args.uniintervene_task, 0))
    return runs


# --------------------------------------------------------------------------- report


def _episode_rows(actor_rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for r in actor_rows if "rollout/length" in r]


def run_metrics(run: str, task: str, preset: str, image_size: int) -> Optional[Dict[str, Any]]:
    """The metrics of one finished run folder (``summary.json`` present), or None.

    Returns ``seed``, ``env_steps``, ``wall_clock_s``, ``eval_history`` (``env_steps``,
    ``success_rate`` in [0, 1], ``minutes``), ``env_steps_to_target`` / ``minutes_to_target``
    (first evaluation with SR >= 0.8; None when never), ``final_sr``, ``updates_per_s``
    (``learner_summary.json``; None without it), ``mean_episode_length`` (env steps of the
    training episodes), the :func:`replay_bytes` fields, and the training episodes'
    ``train_true_sr`` (``rollout/success``), ``train_classifier_sr`` (``rollout/return`` > 0),
    ``classifier_agreement`` (share of episodes where the two agree),
    ``classifier_false_positive`` / ``classifier_false_negative`` (shares of episodes).
    """
    summary = read_json(os.path.join(run, "summary.json"))
    if summary is None:
        return None
    learner = read_json(os.path.join(run, "learner_summary.json")) or {}
    episodes = _episode_rows(read_jsonl(os.path.join(run, "metrics", "actor.jsonl")))
    hist = [{"env_steps": int(h["env_steps"]), "success_rate": float(h["success_rate"]),
             "minutes": float(h.get("wall_clock_s", 0.0)) / 60.0, "wall_clock_s": float(h.get("wall_clock_s", 0.0))}
            for h in summary.get("eval_history", [])]
    seconds = steps_to(hist, "wall_clock_s", TARGET_SR)
    lengths = [float(e["rollout/length"]) for e in episodes]
    true = np.asarray([bool(e.get("rollout/success", 0)) for e in episodes], bool)
    clf = np.asarray([float(e.get("rollout/return", 0.0)) > 0 for e in episodes], bool)
    keys = camera_keys(task, preset)
    state_dim = STATE_DIMS["ur" if is_ur(task) else "metaworld"]
    mem = replay_bytes([(image_size, image_size, 3)] * len(keys), state_dim,
                       float(np.mean(lengths)) if lengths else None,
                       feature_bytes_per_frame=int(learner.get("frame_feature_bytes_per_frame") or 0))
    n = len(episodes)
    return {
        "seed": int(summary.get("seed", -1)), "env_steps": int(summary.get("env_steps", 0)),
        "wall_clock_s": float(summary.get("wall_clock_s", 0.0)),
        "eval_history": [{k: h[k] for k in ("env_steps", "success_rate", "minutes")} for h in hist],
        "env_steps_to_target": steps_to(hist, "env_steps", TARGET_SR),
        "minutes_to_target": None if seconds is None else seconds / 60.0,
        "final_sr": hist[-1]["success_rate"] if hist else None,
        "updates_per_s": learner.get("updates_per_s"),
        "learner_steps": learner.get("learner_steps", summary.get("learner_steps")),
        "mean_episode_length": float(np.mean(lengths)) if lengths else None,
        **mem,
        "train_episodes": n,
        "intervention_rate": summary.get("intervention_rate"),
        "gate_trigger_rate": summary.get("gate_trigger_rate"),
        "eval_system_success_rate": summary.get("eval_system_success_rate"),
        "train_true_sr": float(true.mean()) if n else None,
        "train_classifier_sr": float(clf.mean()) if n else None,
        "classifier_agreement": float((true == clf).mean()) if n else None,
        "classifier_false_positive": float((clf & ~true).mean()) if n else None,
        "classifier_false_negative": float((~clf & true).mean()) if n else None,
    }


def summarize(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One task x variant row over its runs: ``seeds``; ``sr_at`` = per evaluation step (present
    in every run) ``{"median", "mean"}``; ``env_steps_to_target_median`` and
    ``minutes_to_target_median`` (never = +inf, None when more than half never) and their means
    over the runs that got there, ``reached``; medians of ``updates_per_s``, ``transition_bytes``,
    ``per_frame_set`` and the classifier shares; ``frame_set_bytes``."""
    per_step: Dict[int, List[float]] = {}
    for r in runs:
        for h in r["eval_history"]:
            per_step.setdefault(h["env_steps"], []).append(h["success_rate"])
    sr_at = {str(s): {"median": float(np.median(v)), "mean": float(np.mean(v))}
             for s, v in sorted(per_step.items()) if len(v) == len(runs)}
    row = {"seeds": [r["seed"] for r in runs], "n": len(runs), "sr_at": sr_at,
           "reached": sum(r["env_steps_to_target"] is not None for r in runs),
           "frame_set_bytes": runs[0]["frame_set_bytes"] if runs else None,
           "env_steps": [r["env_steps"] for r in runs]}
    for key in ("env_steps_to_target", "minutes_to_target"):
        row[f"{key}_median"] = median_to_target([r[key] for r in runs])
        row[f"{key}_mean"] = _mean([r[key] for r in runs])
    for key in ("final_sr", "updates_per_s", "transition_bytes", "per_frame_set", "train_true_sr",
                "train_classifier_sr", "classifier_agreement", "classifier_false_positive",
                "classifier_false_negative", "wall_clock_s", "intervention_rate", "gate_trigger_rate",
                "eval_system_success_rate"):
        row[f"{key}_median"] = _median([r[key] for r in runs])
    row["final_sr_mean"] = _mean([r["final_sr"] for r in runs])
    return row


def build_result(args, out: str) -> Dict[str, Any]:
    """``results.json``'s content: per task and variant the :func:`summarize` row and its runs,
    the stage-1 / stage-2 reports found on disk, and the budget cuts."""
    per, runs_out = {}, []
    for task in args.tasks:
        per[task] = {}
        for variant in args.variants:
            runs = []
            for (v, t, seed) in planned_runs(args):
                if (v, t) != (variant, task):
                    continue
                m = run_metrics(run_dir(out, variant, task, run_preset(args, variant), seed), task, args.preset,
                                args.image_size)
                if m is not None:
                    m["seed"] = int(seed)
                    runs.append(m)
                    runs_out.append({"task": task, "variant": variant, **m})
            if runs:
                per[task][variant] = summarize(runs)
    pretrain = {}
    for task in sorted({weights_task(t, args.ur_weights_task) for t in args.tasks}):
        rep = read_json(os.path.join(weights_dir(out, task, args.frozen_encoder, args.image_size),
                                     "pretrain_report.json"))
        if rep is not None:
            pretrain[task] = {k: rep.get(k) for k in ("heldout_loss", "heldout_baseline_loss", "heldout_r2",
                                                      "steps", "frames", "seconds", "camera", "encoder")}
    classifier = None
    if "classifier_reward" in args.variants:
        key = camera_keys(args.classifier_task, args.preset)[0]
        m = read_json(os.path.join(classifier_dir(out, args.classifier_task, args.image_size, key), "metrics.json"))
        if m is not None:
            classifier = {"task": args.classifier_task, "image_key": key, "encoder": m.get("encoder"),
                          "heldout": m.get("heldout"), "heldout_frames": m.get("heldout_frames"),
                          "heldout_episodes": m.get("heldout_episodes")}
    cuts = {t: {"budget": args.budgets[t], "scratch_budget": budget_of(args, "scratch", t),
                "state_row_budget": STATE_ROW_BUDGETS.get(t),
                "cut": STATE_ROW_BUDGETS.get(t) is not None and args.budgets[t] < STATE_ROW_BUDGETS[t]}
            for t in args.tasks}
    return {"command": args.command, "preset": args.preset, "image_size": args.image_size,
            "batch_size": args.batch_size, "frozen_encoder": args.frozen_encoder,
            "frozen_features": args.frozen_features,
            "scratch_encoder": args.scratch_encoder, "eval_period": args.eval_period,
            "eval_episodes": args.eval_episodes, "target_sr": TARGET_SR, "budgets": cuts,
            "machine": f"{os.cpu_count()} CPU cores, no GPU; learner and actor as two processes",
            "ur_weights_task": args.ur_weights_task, "pretrain": pretrain, "classifier": classifier,
            "per_task": per, "runs": runs_out}


def results_markdown(result: Dict[str, Any]) -> str:
    """The report text of :func:`build_result`'s dict."""
    lines = ["# HiL-SERL from pixels: frozen pretrained encoder against from scratch", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']}. Preset `{result['preset']}` at {result['image_size']} px, "
             f"learner batch {result['batch_size']}; frozen: `{result['frozen_encoder']}` pre-trained on "
             f"the task's rendered frames; scratch: `{result['scratch_encoder']}`. Evaluation: "
             f"{result['eval_episodes']} deterministic episodes, no human, every {result['eval_period']} "
             f"env steps. Medians (and means) over seeds; to SR >= {result['target_sr']}: first "
             f"evaluation at or above it, never = +inf (median \"-\" when more than half never did).", ""]
    cut = [f"{t} {c['budget']} (state row {c['state_row_budget']})" for t, c in result["budgets"].items() if c["cut"]]
    if cut:
        lines += [f"**Budgets cut** below the state-based HiL-SERL row: {', '.join(cut)} env steps "
                  "(cost per learner update on this CPU: benchmarks/pixels.py docstring).", ""]
    shorter = [f"{t} {c['scratch_budget']}" for t, c in result["budgets"].items()
               if c.get("scratch_budget") is not None and c["scratch_budget"] < c["budget"]]
    if shorter:
        lines += [f"**The from-scratch variant ran shorter** ({', '.join(shorter)} env steps): its update "
                  "trains the CNN and costs several times the frozen one here; compare the curves at equal "
                  "env steps.", ""]
    if result.get("frozen_features") == "cached":
        lines += ["Frozen variants: the backbone's feature maps are computed once per stored frame "
                  "(`learner.cache_frame_features`), so they run without HiL-SERL's random-crop "
                  "augmentation (`--frozen_features=per_update` restores it, at the per-update cost); their replay "
                  "bytes include the cached maps.", ""]
    if any(is_ur(t) for t in result["per_task"]):
        lines += [f"The UR task's frozen encoder was pre-trained on `{result['ur_weights_task']}` frames "
                  "(launchers/pretrain_encoder.py renders Meta-World only).", ""]
    lines += ["| task | variant | seeds | final SR (median / mean) | env steps to SR >= 0.8 (median / mean, reached) | "
              "minutes to SR >= 0.8 | learner updates/s | replay bytes / transition (x frame set) | run minutes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task, variants in result["per_task"].items():
        for variant, r in variants.items():
            mem = (f"{fmt(r['transition_bytes_median'], 0)} ({fmt(r['per_frame_set_median'], 3)} x "
                   f"{r['frame_set_bytes']})")
            lines.append(
                f"| {task} | {variant} | {r['n']} | {fmt(r['final_sr_median'])} / {fmt(r['final_sr_mean'])} | "
                f"{fmt(r['env_steps_to_target_median'], 0)} / {fmt(r['env_steps_to_target_mean'], 0)} "
                f"({r['reached']}/{r['n']}) | {fmt(r['minutes_to_target_median'], 1)} | "
                f"{fmt(r['updates_per_s_median'], 3)} | {mem} | "
                f"{fmt(None if r['wall_clock_s_median'] is None else r['wall_clock_s_median'] / 60, 1)} |")
    lines += ["", "SR at each evaluation (median / mean over seeds):", "",
              "| task | variant | " + "env steps: SR |", "|---|---|---|"]
    for task, variants in result["per_task"].items():
        for variant, r in variants.items():
            cells = ", ".join(f"{s}: {v['median']:.2f} / {v['mean']:.2f}" for s, v in r["sr_at"].items())
            lines.append(f"| {task} | {variant} | {cells or '-'} |")
    clf_rows = [(t, r) for t, vs in result["per_task"].items() for v, r in vs.items() if v == "classifier_reward"]
    lines += ["", "## Reward classifier", ""]
    c = result["classifier"]
    if c and c.get("heldout"):
        h = c["heldout"]
        lines.append(f"Classifier ({c['task']}, camera `{c['image_key']}`, {c['encoder']}): held-out "
                     f"({c['heldout_episodes']} episodes, {c['heldout_frames']} frames) accuracy "
                     f"{fmt(h.get('accuracy'), 3)}, precision {fmt(h.get('precision'), 3)}, recall "
                     f"{fmt(h.get('recall'), 3)} at threshold {h.get('threshold')}.")
    else:
        lines.append("Classifier: not trained yet.")
    for task, r in clf_rows:
        lines += ["", f"Classifier-reward run on {task}: training episodes' classifier success "
                  f"{fmt(r['train_classifier_sr_median'])} against true success {fmt(r['train_true_sr_median'])} "
                  f"(agree on {fmt(r['classifier_agreement_median'])} of episodes; classifier yes / true no "
                  f"{fmt(r['classifier_false_positive_median'])}, classifier no / true yes "
                  f"{fmt(r['classifier_false_negative_median'])}); evaluations use the true success."]
    ui_rows = [(t, r) for t, vs in result["per_task"].items() for v, r in vs.items() if v == "uniintervene"]
    if ui_rows:
        lines += ["", "## UniIntervene on images", ""]
    for task, r in ui_rows:
        lines.append(f"`{task},{result['preset']}+uniintervene` (proxy value and intervention model on the camera "
                     f"frames, trained online from fresh parameters): trigger rate per gate decision "
                     f"{fmt(r['gate_trigger_rate_median'])}, IR {fmt(r['intervention_rate_median'])}, final SR "
                     f"{fmt(r['final_sr_median'])} (policy alone) / {fmt(r['eval_system_success_rate_median'])} "
                     f"(policy + gate), {fmt(r['updates_per_s_median'], 3)} learner updates/s.")
    lines += ["", "## Encoder pre-training", ""]
    for task, p in result["pretrain"].items():
        lines.append(f"- {task} ({p.get('encoder')}, camera {p.get('camera')}, {p.get('frames')} frames, "
                     f"{p.get('steps')} steps): held-out MSE {fmt(p.get('heldout_loss'), 4)} against "
                     f"{fmt(p.get('heldout_baseline_loss'), 4)} for predicting the mean.")
    lines += ["", "Per run:", "", "| task | variant | seed | env steps | final SR | env steps to 0.8 | "
              "minutes to 0.8 | updates/s | learner steps | mean episode length |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['task']} | {r['variant']} | {r['seed']} | {r['env_steps']} | {fmt(r['final_sr'])} | "
                     f"{fmt(r['env_steps_to_target'], 0)} | {fmt(r['minutes_to_target'], 1)} | "
                     f"{fmt(r['updates_per_s'], 3)} | {fmt(r['learner_steps'])} | {fmt(r['mean_episode_length'], 1)} |")
    lines += ["", "![curves](curves.png)", ""]
    return "\n".join(lines)


def write_plot(path: str, result: Dict[str, Any]) -> None:
    """``curves.png``: per task, the median eval SR over seeds against env steps (band: min to
    max) and against minutes, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["per_task"])
    fig, axes = plt.subplots(max(len(tasks), 1), 2, figsize=(12, 3.6 * max(len(tasks), 1)), squeeze=False)
    for i, task in enumerate(tasks):
        for variant in result["per_task"][task]:
            runs = [r for r in result["runs"] if r["task"] == task and r["variant"] == variant]
            per_step: Dict[int, List[float]] = {}
            minutes: Dict[int, List[float]] = {}
            for r in runs:
                for h in r["eval_history"]:
                    per_step.setdefault(h["env_steps"], []).append(h["success_rate"])
                    minutes.setdefault(h["env_steps"], []).append(h["minutes"])
            steps = sorted(per_step)
            med = [float(np.median(per_step[s])) for s in steps]
            line, = axes[i, 0].plot(steps, med, marker=".", label=f"{variant} ({len(runs)} seeds)")
            axes[i, 0].fill_between(steps, [min(per_step[s]) for s in steps], [max(per_step[s]) for s in steps],
                                    color=line.get_color(), alpha=0.12)
            axes[i, 1].plot([float(np.median(minutes[s])) for s in steps], med, marker=".",
                            color=line.get_color(), label=variant)
        axes[i, 0].set(title=f"{task}: eval SR (median over seeds)", xlabel="env steps", ylim=(-0.05, 1.05))
        axes[i, 1].set(title=f"{task}: eval SR", xlabel="wall clock (min)", ylim=(-0.05, 1.05))
        for ax in axes[i]:
            ax.axhline(TARGET_SR, color="gray", ls="--", lw=0.8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args, out: str) -> Dict[str, Any]:
    """Writes ``results.json``, ``results.md`` and ``curves.png`` into ``out``; returns the dict."""
    from serl_ext.files import atomic_write

    result = build_result(args, out)
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, "results.json"), json.dumps(result, indent=2).encode())
    atomic_write(os.path.join(out, "results.md"), results_markdown(result).encode())
    write_plot(os.path.join(out, "curves.png"), result)
    return result


# --------------------------------------------------------------------------- the sweep


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="",
                   help=f"comma separated, of {','.join(VARIANTS)} ('' = all; uniintervene only where the preset "
                        "has a +uniintervene form)")
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="TASK:ENV_STEPS,... (every task needs one)")
    p.add_argument("--scratch_budgets", default=DEFAULT_SCRATCH_BUDGETS,
                   help="TASK:ENV_STEPS,... of the scratch variant, capped at --budgets ('' = --budgets)")
    p.add_argument("--frozen_features", default="cached", choices=sorted(FROZEN_FEATURES),
                   help="cached: feature maps once per stored frame, no augmentation; per_update: HiL-SERL's")
    p.add_argument("--preset", default="hil_serl_cameras", choices=("hil_serl_cameras", "hil_serl_pixels"))
    p.add_argument("--image_size", type=int, default=64, help="S of every camera (pre-training and runs)")
    p.add_argument("--batch_size", type=int, default=32, help="learner batch (HiL-SERL: 256; docstring)")
    p.add_argument("--eval_period", type=int, default=2000,
                   help="env steps between evaluations (10 episodes of up to 125 steps on pick-place cost up to 1250 "
                        "env steps, no learner update)")
    p.add_argument("--eval_episodes", type=int, default=10)
    p.add_argument("--frozen_encoder", default="resnet10", choices=("resnet10", "small_cnn"))
    p.add_argument("--scratch_encoder", default="small_cnn", choices=("resnet10", "small_cnn"))
    p.add_argument("--pretrain_camera", default="corner",
                   help="Meta-World camera of the pre-training frames of hil_serl_pixels (hil_serl_cameras: its cameras)")
    p.add_argument("--pretrain_frames", type=int, default=20000)
    p.add_argument("--pretrain_steps", type=int, default=3000)
    p.add_argument("--pretrain_flags", default="", help="more pretrain_encoder.py flags, space separated")
    p.add_argument("--ur_weights_task", default="pick-place", help="frozen weights for UR tasks")
    p.add_argument("--classifier_task", default="pick-place")
    p.add_argument("--uniintervene_task", default="pick-place",
                   help="the one run of the uniintervene variant (seed 0): UniIntervene's models on images online")
    p.add_argument("--classifier_episodes", type=int, default=200)
    p.add_argument("--classifier_steps", type=int, default=2000)
    p.add_argument("--classifier_flags", default="", help="more train_reward_classifier.py flags")
    p.add_argument("--report_only", action="store_true")
    p.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--commit", action="store_true", help="git-commit each finished stage and run")
    p.add_argument("--stop_by", default="", help="start no run not expected to finish by this time (ISO 8601, "
                   "UTC unless an offset is given; expected = the longest finished run of the variant and task)")
    p.add_argument("--stop_after_min", type=float, default=0.0, help="--stop_by this many minutes from now")
    p.add_argument("--unknown_run_min", type=float, default=90.0,
                   help="expected minutes of a run with no finished run of its task on record (for --stop_by)")
    own, extra = list(argv), []
    if "--" in own:
        i = own.index("--")
        own, extra = own[:i], own[i + 1:]
    args = p.parse_args(own)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    from configs.algorithms import ALGORITHMS

    has_ui = f"{args.preset}+uniintervene" in ALGORITHMS
    args.variants = ([v for v in args.variants.split(",") if v]
                     or [v for v in VARIANTS if v != "uniintervene" or has_ui])
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if "uniintervene" in args.variants:
        if not has_ui:
            p.error(f"the uniintervene variant needs a {args.preset}+uniintervene preset; drop it with --variants")
    args.budgets = parse_budgets(args.budgets)
    args.scratch_budgets = parse_budgets(args.scratch_budgets) if args.scratch_budgets.strip() else {}
    missing = [t for t in args.tasks if t not in args.budgets]
    if missing:
        p.error(f"--budgets has no entry for {missing}")
    for t in args.tasks:
        camera_keys(t, args.preset)  # ValueError for hil_serl_pixels on a UR task
    args.pretrain_flags = args.pretrain_flags.split()
    args.classifier_flags = args.classifier_flags.split()
    from benchmarks.comparison.launch import deadline_from_flags, without_schedule_flags

    try:
        args.deadline = deadline_from_flags(args.stop_by, args.stop_after_min)
    except ValueError as e:
        p.error(str(e))
    args.command = "python benchmarks/pixels.py " + " ".join(without_schedule_flags(argv))
    return args, extra


def expected_run_s(out: str, variant: str, task: str, preset: str) -> Optional[float]:
    """Seconds a run is expected to take: the longest finished run of ``variant`` on ``task``,
    else of any variant on ``task``; None without one (it may then start)."""
    import glob

    from benchmarks.comparison.launch import first_longest_wall_clock_s

    runs = glob.escape(os.path.join(out, "runs"))
    return first_longest_wall_clock_s(
        os.path.join(runs, glob.escape(variant), glob.escape(task), glob.escape(preset), "seed*", "summary.json"),
        os.path.join(runs, "*", glob.escape(task), "*", "seed*", "summary.json"))


def _run_logged(cmd: List[str], log: str) -> int:
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        return subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT).returncode


def _stage_files(folder: str, names: Sequence[str]) -> List[str]:
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def _commit(paths: Sequence[str], message: str) -> None:
    from benchmarks.hil_serl import git_commit

    paths = [p for p in paths if os.path.exists(p)]
    if paths:
        git_commit(list(paths), message)


def main(argv=None):
    from benchmarks.comparison.launch import defer_reason

    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out if args.dry_run else os.path.abspath(args.out)
    report_files = [os.path.join(out, f) for f in ("results.md", "results.json", "curves.png")]
    runs = planned_runs(args)
    if not args.report_only:
        # Stage 1: one weights folder per pre-training task.
        if any(v in ("frozen", "classifier_reward") for v, _, _ in runs):
            for task in sorted({weights_task(t, args.ur_weights_task) for v, t, _ in runs if v != "scratch"}):
                wdir = weights_dir(out, task, args.frozen_encoder, args.image_size)
                if os.path.isfile(os.path.join(wdir, "encoder.json")):
                    continue
                cmd = pretrain_command(args, out, task)
                print("[pixels]", " ".join(cmd), flush=True)
                if args.dry_run:
                    continue
                t0 = time.time()
                rc = _run_logged(cmd, os.path.join(out, "logs", f"pretrain_{task}.txt"))
                print(f"[pixels] pretrain {task}: exit {rc} after {(time.time() - t0) / 60:.1f} min", flush=True)
                if rc != 0:
                    raise SystemExit(f"pre-training failed; see {out}/logs/pretrain_{task}.txt")
                if args.commit:  # reports, not the params (regenerated by this stage)
                    _commit(_stage_files(wdir, ("encoder.json", "pretrain_report.json", "pretrain_report.md"))
                            + [os.path.join(out, "logs", f"pretrain_{task}.txt")], f"Pixel benchmark: encoder {task}")
        # Stage 2: the reward classifier.
        if any(v == "classifier_reward" for v, _, _ in runs):
            key = camera_keys(args.classifier_task, args.preset)[0]
            cdir = classifier_dir(out, args.classifier_task, args.image_size, key)
            if not os.path.isfile(os.path.join(cdir, "classifier.json")):
                cmd = classifier_command(args, out)
                print("[pixels]", " ".join(cmd), flush=True)
                if not args.dry_run:
                    t0 = time.time()
                    rc = _run_logged(cmd, os.path.join(out, "logs", "classifier.txt"))
                    print(f"[pixels] classifier: exit {rc} after {(time.time() - t0) / 60:.1f} min", flush=True)
                    if rc != 0:
                        raise SystemExit(f"classifier training failed; see {out}/logs/classifier.txt")
                    if args.commit:
                        _commit(_stage_files(cdir, ("classifier.json", "metrics.json", "metrics.md"))
                                + [os.path.join(out, "logs", "classifier.txt")], "Pixel benchmark: reward classifier")
        # Stage 3: the runs.
        for variant, task, seed in runs:
            rdir = run_dir(out, variant, task, run_preset(args, variant), seed)
            if os.path.isfile(os.path.join(rdir, "summary.json")):
                continue
            cmd = run_command(args, out, variant, task, seed, extra)
            expected = expected_run_s(out, variant, task, run_preset(args, variant))
            expected = 60.0 * args.unknown_run_min if expected is None else expected
            why = None if args.dry_run else defer_reason(args.deadline, expected)
            if why:
                print(f"[pixels] deferred {variant} {task} seed {seed}: {why}", flush=True)
                continue
            print("[pixels]", " ".join(cmd), flush=True)
            if args.dry_run:
                continue
            if os.path.isdir(rdir):
                shutil.rmtree(rdir)
            t0 = time.time()
            log = log_path(out, variant, task, seed)
            rc = _run_logged(cmd, log)
            print(f"[pixels] {variant} {task} seed {seed}: exit {rc} after {(time.time() - t0) / 60:.1f} min",
                  flush=True)
            report(args, out)
            if args.commit and rc == 0:
                _commit([rdir, log] + report_files, f"Pixel benchmark: {variant} {task} seed {seed}")
    if args.dry_run:
        return None
    result = report(args, out)
    print(results_markdown(result), flush=True)
    if args.commit and not args.report_only:
        _commit(report_files, "Pixel benchmark: report")
    return result


if __name__ == "__main__":
    main()
