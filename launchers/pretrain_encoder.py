"""Pre-trains an image backbone on the task's own rendered frames and saves a weights folder.

  python launchers/pretrain_encoder.py --task=pick-place --out=weights/pick-place-resnet10-64 \
      [--frames=20000] [--encoder=resnet10|small_cnn] [--size=64|128] [--steps=3000]
      [--image_keys=front,wrist]

Objective: privileged-state regression (``serl_ext/networks/pretraining.py``): from one frame
predict hand xyz, gripper opening and object xyz, standardised, MSE. Frames: scripted-expert
(noisy) and random-action episodes of the task env with ``image_obs`` (``serl_ext/envs/frames.py``),
split by episode into training and held-out frames. ``--image_keys=front,wrist`` renders the
frames from each of the env's camera keys in turn (an equal share of ``--frames`` each, from
their own episodes) and trains the one backbone on all of them, as the agent loads the one
weights folder into every camera's backbone; without it, ``--camera`` (one Meta-World camera,
default ``corner``, which is also what ``front`` renders). Nothing is downloaded.

Writes ``OUT/backbone.msgpack`` + ``OUT/encoder.json`` (``serl_ext/networks/pretrained.py``;
architecture, widths, input size, the image mean / std it was trained with, and the report)
and ``OUT/pretrain_report.{json,md}`` (held-out loss against the predict-the-mean baseline, R2
per target). Use it with ``--config.agent.encoder.pretrained_path=OUT
--config.agent.encoder.type=ENCODER --config.agent.encoder.freeze=True``.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402


def _define_flags() -> None:
    """The command line's flags, defined only when this file runs as a script: importing it
    (the tests call :func:`pretrain_encoder`) must not add flags to absl's global registry,
    where another module's ``--out`` would collide."""
    global _TASK, _OUT, _FRAMES, _ENCODER, _SIZE, _WIDTHS, _STEPS, _BATCH, _LR, _CROP, _CAMERA
    global _HOLDOUT, _EPISODE_STEPS, _EXPERT, _SEED
    _TASK = flags.DEFINE_string("task", "pick-place", "Meta-World task (serl_ext/envs/tasks.py).")
    _OUT = flags.DEFINE_string("out", "", "Weights folder to write (e.g. weights/pick-place-resnet10-64).")
    _FRAMES = flags.DEFINE_integer("frames", 20000, "Rendered frames in all (training + held-out).")
    _ENCODER = flags.DEFINE_enum("encoder", "resnet10", ["resnet10", "small_cnn"], "Backbone architecture.")
    _SIZE = flags.DEFINE_integer("size", 64, "Frame size in pixels (the agent's env.image_size).")
    _WIDTHS = flags.DEFINE_string("widths", "", "Backbone widths, comma separated ('' = the class default).")
    _STEPS = flags.DEFINE_integer("steps", 3000, "Adam steps.")
    _BATCH = flags.DEFINE_integer("batch_size", 64, "Frames per step.")
    _LR = flags.DEFINE_float("lr", 3e-4, "Adam learning rate.")
    _CROP = flags.DEFINE_integer("crop_pad", -1, "Random-crop padding in pixels (-1: size // 16, the agent's 4 at 64 px).")
    _CAMERA = flags.DEFINE_string("camera", "corner", "Meta-World camera (the env's default: corner).")
    global _IMAGE_KEYS
    _IMAGE_KEYS = flags.DEFINE_string("image_keys", "", "Env camera keys to render, comma separated (e.g. "
                                      "front,wrist; '' = --camera only).")
    _HOLDOUT = flags.DEFINE_float("holdout", 0.2, "Share of episodes held out.")
    _EPISODE_STEPS = flags.DEFINE_integer("episode_steps", 50, "Agent steps per rendered episode.")
    _EXPERT = flags.DEFINE_float("expert_fraction", 0.5, "Share of scripted-expert episodes (rest: random actions).")
    _SEED = flags.DEFINE_integer("seed", 0, "Seed of the episodes, the init and the batches.")


def pretrain_encoder(task, out, *, frames=20000, encoder="resnet10", size=64, widths=None, steps=3000,
                     batch_size=64, lr=3e-4, crop_pad=None, camera="corner", holdout=0.2, episode_steps=50,
                     expert_fraction=0.5, seed=0, log_every=0, image_keys=None):
    """Render frames, pre-train, write ``out`` (module docstring). Returns the report dict.

    ``crop_pad`` None: ``size // 16``. ``image_keys``: env camera keys (``front``, ``wrist``,
    ...) rendered in turn, ``frames // len(image_keys)`` each (the first takes the remainder),
    instead of ``camera``; the report's ``frames_per_key`` counts them. Raises ValueError for
    bad settings (e.g. fewer than 2 episodes' worth of frames, an empty key list).
    """
    from serl_ext.envs.frames import collect_frames, concat_frames, privileged_targets, split_by_episode
    from serl_ext.networks.pretrained import save_encoder_weights
    from serl_ext.networks.pretraining import pretrain_backbone

    common = dict(image_size=size, expert_fraction=expert_fraction, episode_steps=episode_steps, privileged=True)
    if image_keys is None:
        data = collect_frames(task, frames, camera=camera, seed=seed, **common)
        per_key = {camera: int(len(data["pixels"]))}
    else:
        keys = [str(k) for k in image_keys]
        if not keys or int(frames) < len(keys):
            raise ValueError(f"image_keys must name at least one camera and frames >= len(image_keys); got "
                             f"{keys}, frames={frames}")
        shares = [int(frames) // len(keys)] * len(keys)
        shares[0] += int(frames) - sum(shares)
        parts = [collect_frames(task, n, image_key=key, seed=seed + 1_000 * i, **common)
                 for i, (key, n) in enumerate(zip(keys, shares))]
        data = concat_frames(parts)
        per_key = {key: int(len(p["pixels"])) for key, p in zip(keys, parts)}
        camera = ",".join(keys)
    train, held = split_by_episode(data["episode"], holdout, seed)
    targets = privileged_targets(data["privileged"])
    backbone, report = pretrain_backbone(
        data["pixels"][train], targets[train], data["pixels"][held], targets[held], encoder_type=encoder,
        widths=widths, steps=steps, batch_size=batch_size, learning_rate=lr,
        crop_pad=max(1, size // 16) if crop_pad is None else crop_pad, seed=seed, log_every=log_every,
    )
    report.update(task=task, frames=int(len(data["pixels"])), train_frames=int(train.sum()),
                  heldout_frames=int(held.sum()), episodes=int(len(set(data["episode"].tolist()))),
                  camera=camera, size=int(size), encoder=encoder, frames_per_key=per_key)
    save_encoder_weights(out, backbone, architecture=encoder, widths=widths, input_size=(size, size),
                         image_mean=report["image_mean"], image_std=report["image_std"],
                         info={"objective": report["objective"], "task": task, "camera": camera,
                               "pretrain_report": {k: v for k, v in report.items()
                                                   if k not in ("image_mean", "image_std")}})
    with open(os.path.join(out, "pretrain_report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    lines = [f"# Encoder pre-training: {task}, {encoder}, {size} px", "",
             f"Objective: {report['objective']} (hand xyz, gripper, object xyz; standardised; MSE).", "",
             f"Frames: {report['train_frames']} training / {report['heldout_frames']} held-out "
             f"({report['episodes']} episodes, split by episode; cameras: "
             + ", ".join(f"{k} {n}" for k, n in report["frames_per_key"].items()) + f"), {report['steps']} steps, "
             f"{report['seconds']:.0f} s.", "",
             "| | held-out MSE |", "|---|---|",
             f"| pre-trained | {report['heldout_loss']:.4f} |",
             f"| predict the training mean | {report['heldout_baseline_loss']:.4f} |", "",
             "| target | held-out R2 |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in report["heldout_r2"].items()]
    with open(os.path.join(out, "pretrain_report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return report


def main(argv):
    del argv
    if not _OUT.value:
        raise app.UsageError("--out is required (e.g. --out=weights/pick-place-resnet10-64)")
    widths = tuple(int(w) for w in _WIDTHS.value.split(",")) if _WIDTHS.value else None
    report = pretrain_encoder(
        _TASK.value, _OUT.value, frames=_FRAMES.value, encoder=_ENCODER.value, size=_SIZE.value, widths=widths,
        steps=_STEPS.value, batch_size=_BATCH.value, lr=_LR.value, crop_pad=None if _CROP.value < 0 else _CROP.value,
        camera=_CAMERA.value, holdout=_HOLDOUT.value, episode_steps=_EPISODE_STEPS.value,
        expert_fraction=_EXPERT.value, seed=_SEED.value, log_every=max(1, _STEPS.value // 20),
        image_keys=[k for k in _IMAGE_KEYS.value.split(",") if k] or None,
    )
    print(f"[pretrain] held-out MSE {report['heldout_loss']:.4f} (predict-the-mean baseline "
          f"{report['heldout_baseline_loss']:.4f}); wrote {_OUT.value}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
