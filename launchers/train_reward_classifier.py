"""Trains a binary success classifier on camera frames (HiL-SERL's train_reward_classifier).

  python launchers/train_reward_classifier.py --task=pick-place --out=classifiers/pick-place-64 \
      [--episodes=200] [--size=64] [--encoder_weights=weights/pick-place-resnet10-64] \
      [--demos=demos/pick-place-pixels64] [--steps=2000] [--threshold=0.5]

Frames and labels: simulated episodes of the task env with image observations (scripted
expert with per-episode action noise, and random actions; ``serl_ext/envs/frames.py``), each
frame labelled with the simulator's success flag; with ``--demos`` also the frames of recorded
episodes, labelled with their per-step success (or the episode's success label). Episodes
are split into training and held-out ones (``--holdout``, stratified by whether an episode
has a success frame). Model: frozen pretrained backbone (``--encoder_weights``, a folder of
launchers/pretrain_encoder.py) or a SmallCNN from scratch, then a small MLP head
(``serl_ext/envs/reward_classifier.py``).

Writes ``OUT/classifier.json`` + ``OUT/params.msgpack`` (the classifier, loadable alone) and
``OUT/metrics.{json,md}``: accuracy, precision, recall, F1 on the held-out episodes' frames
at ``--threshold`` and over a threshold sweep. Nothing is downloaded.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_TASK = flags.DEFINE_string("task", "pick-place", "Meta-World task (serl_ext/envs/tasks.py).")
_OUT = flags.DEFINE_string("out", "", "Classifier folder to write (e.g. classifiers/pick-place-64).")
_EPISODES = flags.DEFINE_integer("episodes", 200, "Simulated episodes rendered (0: only --demos).")
_EPISODE_STEPS = flags.DEFINE_integer("episode_steps", 50, "Agent steps per simulated episode.")
_EXPERT = flags.DEFINE_float("expert_fraction", 0.7, "Share of scripted-expert episodes (rest: random actions).")
_NOISE = flags.DEFINE_string("expert_noise", "0.0,0.6", "low,high of the per-episode expert action noise std.")
_SIZE = flags.DEFINE_integer("size", 64, "Frame size in pixels (the agent's env.image_size).")
_CAMERA = flags.DEFINE_string("camera", "corner", "Meta-World camera (the env's default: corner).")
_IMAGE_KEY = flags.DEFINE_string("image_key", "pixels", "Observation key the classifier reads: pixels (rendered from "
                                  "--camera), or a camera key such as front / wrist (hil_serl_cameras).")
_DEMOS = flags.DEFINE_string("demos", "", "Folder of recorded image episodes to add (episodes.py files).")
_WEIGHTS = flags.DEFINE_string("encoder_weights", "", "Pretrained weights folder (frozen backbone); '' = SmallCNN from scratch.")
_WIDTHS = flags.DEFINE_string("widths", "", "Scratch SmallCNN widths, comma separated ('' = 32,64,128,256).")
_LATENT = flags.DEFINE_integer("latent_dim", 64, "Per-camera latent width.")
_HIDDEN = flags.DEFINE_string("hidden_dims", "256", "Head MLP widths, comma separated.")
_STEPS = flags.DEFINE_integer("steps", 2000, "Adam steps (balanced batches).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Frames per step.")
_LR = flags.DEFINE_float("lr", 3e-4, "Adam learning rate.")
_CROP = flags.DEFINE_integer("crop_pad", -1, "Random-crop padding (-1: size // 16).")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "Decision threshold stored with the classifier.")
_HOLDOUT = flags.DEFINE_float("holdout", 0.25, "Share of episodes held out.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the episodes, the split, the init and the batches.")

SWEEP = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def train_reward_classifier(task, out, *, episodes=200, episode_steps=50, expert_fraction=0.7,
                            expert_noise=(0.0, 0.6), size=64, camera="corner", image_key="pixels", demos="", encoder_weights="",
                            widths=None, latent_dim=64, hidden_dims=(256,), steps=2000, batch_size=64, lr=3e-4,
                            crop_pad=None, threshold=0.5, holdout=0.25, seed=0, log_every=0):
    """Collect labelled frames, train, evaluate on held-out episodes, write ``out``.

    ``image_key``: the env observation key rendered and read by the classifier (``pixels``, from
    ``camera``; or a camera key of ``serl_ext.envs.metaworld_env.CAMERA_KEYS`` such as ``front``,
    which renders its own camera); the classifier's ``image_keys`` are ``(image_key,)``, so that
    ``RewardClassifierWrapper`` finds the key in the training env's observations.

    Returns the metrics dict (``heldout`` at ``threshold``, ``sweep``, ``train``, counts).
    Raises ValueError for no frames, a single class, or frames of another size in ``demos``;
    FileNotFoundError for a missing ``demos`` / ``encoder_weights`` folder.
    """
    import numpy as np

    from serl_ext.data.episodes import list_episodes, load_episode
    from serl_ext.envs.frames import collect_frames, concat_frames, frames_from_episodes, stratified_holdout
    from serl_ext.envs.reward_classifier import ClassifierSpec, binary_metrics, train_classifier
    from serl_ext.networks.pretrained import load_encoder_weights

    parts = []
    if episodes > 0:
        parts.append(collect_frames(task, episodes * (episode_steps + 1), image_size=size, camera=camera, seed=seed,
                                    expert_fraction=expert_fraction, expert_noise=expert_noise,
                                    episode_steps=episode_steps, image_key=image_key))
    if demos:
        if not os.path.isdir(demos):
            raise FileNotFoundError(f"--demos folder {demos!r} does not exist")
        recorded = frames_from_episodes([load_episode(p) for p in list_episodes(demos)], image_key=image_key)
        if recorded["pixels"].shape[1:] != (size, size, 3):
            raise ValueError(f"recorded frames are {recorded['pixels'].shape[1:]}, --size={size} asks {(size, size, 3)}")
        parts.append(recorded)
    if not parts:
        raise ValueError("no frames: give --episodes > 0 or --demos")
    data = concat_frames(parts)
    train, held = stratified_holdout(data["episode"], data["success"], holdout, seed)

    backbone, spec_kw = None, {}
    if encoder_weights:
        backbone, meta = load_encoder_weights(encoder_weights, input_size=(size, size))
        if meta is None:
            raise ValueError(f"--encoder_weights {encoder_weights!r} is a bare params file; give a weights folder "
                             "(launchers/pretrain_encoder.py) so the architecture and normalisation are known")
        spec_kw = dict(encoder_type=meta.architecture, widths=tuple(meta.widths), image_mean=tuple(meta.image_mean),
                       image_std=tuple(meta.image_std), freeze_backbone=True,
                       encoder_weights=os.path.abspath(encoder_weights))
    else:
        spec_kw = dict(encoder_type="small_cnn", widths=None if widths is None else tuple(int(w) for w in widths))
    spec = ClassifierSpec(image_keys=(image_key,), image_size=(size, size), latent_dim=int(latent_dim),
                          hidden_dims=tuple(int(h) for h in hidden_dims), threshold=float(threshold), **spec_kw)
    classifier, history = train_classifier(
        spec, {image_key: data["pixels"][train]}, data["success"][train], backbone=backbone, steps=steps,
        batch_size=batch_size, learning_rate=lr, crop_pad=max(1, size // 16) if crop_pad is None else crop_pad,
        seed=seed, log_every=log_every,
    )
    probs = classifier.predict_proba({image_key: data["pixels"][held]})
    labels = data["success"][held]
    train_probs = classifier.predict_proba({image_key: data["pixels"][train]})
    metrics = {
        "task": task, "size": int(size), "camera": camera, "image_key": image_key,
        "encoder": "pretrained frozen " + spec.encoder_type if encoder_weights else "small_cnn from scratch",
        "frames": int(len(data["success"])), "episodes": int(len(np.unique(data["episode"]))),
        "train_frames": int(train.sum()), "heldout_frames": int(held.sum()),
        "heldout_episodes": int(len(np.unique(data["episode"][held]))),
        "positive_fraction": float(data["success"].mean()),
        "heldout": binary_metrics(probs, labels, threshold),
        "train": binary_metrics(train_probs, data["success"][train], threshold),
        "sweep": [binary_metrics(probs, labels, t) for t in SWEEP],
        **history,
    }
    classifier.metrics = metrics
    classifier.save(out)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
    h = metrics["heldout"]
    lines = [f"# Reward classifier: {task}, {size} px, {metrics['encoder']}", "",
             f"Frames: {metrics['train_frames']} training / {metrics['heldout_frames']} held-out "
             f"({metrics['heldout_episodes']} of {metrics['episodes']} episodes held out; "
             f"{metrics['positive_fraction']:.1%} success frames), {history['steps']} steps, "
             f"{history['seconds']:.0f} s.", "",
             f"Held-out at threshold {threshold}: accuracy {h['accuracy']:.3f}, precision {h['precision']:.3f}, "
             f"recall {h['recall']:.3f}, F1 {h['f1']:.3f} (tp {h['tp']}, fp {h['fp']}, tn {h['tn']}, fn {h['fn']}).", "",
             "| threshold | accuracy | precision | recall | F1 |", "|---|---|---|---|---|"]
    lines += [f"| {m['threshold']:.1f} | {m['accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['f1']:.3f} |" for m in metrics["sweep"]]
    with open(os.path.join(out, "metrics.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return metrics


def _ints(text):
    return tuple(int(x) for x in text.split(",")) if text else None


def main(argv):
    del argv
    if not _OUT.value:
        raise app.UsageError("--out is required (e.g. --out=classifiers/pick-place-64)")
    noise = tuple(float(x) for x in _NOISE.value.split(","))
    metrics = train_reward_classifier(
        _TASK.value, _OUT.value, episodes=_EPISODES.value, episode_steps=_EPISODE_STEPS.value,
        expert_fraction=_EXPERT.value, expert_noise=noise, size=_SIZE.value, camera=_CAMERA.value,
        image_key=_IMAGE_KEY.value,
        demos=_DEMOS.value, encoder_weights=_WEIGHTS.value, widths=_ints(_WIDTHS.value), latent_dim=_LATENT.value,
        hidden_dims=_ints(_HIDDEN.value) or (), steps=_STEPS.value, batch_size=_BATCH.value, lr=_LR.value,
        crop_pad=None if _CROP.value < 0 else _CROP.value, threshold=_THRESHOLD.value, holdout=_HOLDOUT.value,
        seed=_SEED.value, log_every=max(1, _STEPS.value // 20),
    )
    h = metrics["heldout"]
    print(f"[classifier] held-out accuracy {h['accuracy']:.3f} precision {h['precision']:.3f} recall "
          f"{h['recall']:.3f}; wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
