"""UniIntervene online: the learner side (models trained while HiL-SERL runs).

The learner process of ``hil_serl+uniintervene`` (``serl_ext/loop/learner.py``) owns one
:class:`OnlineUniIntervene`. It

1. **assembles episodes** from the transitions the actor streams (every transition goes to the
   online store; :class:`EpisodeAssembler` cuts them into ``serl_ext.data.episodes`` dicts at
   ``dones``; a transition whose observation does not continue the open episode, e.g. after an
   actor restart, drops the partial episode);
2. **computes labels when an episode ends** (at the next refresh, every
   ``refresh_episodes`` finished episodes): the proxy-value curve of every kept episode, the
   stagnation labels (mining rules, DESIGN section 4) and the TVR targets
   (:func:`uniintervene_jax.labels.label_episodes`, as the offline pipeline), then rebuilds the
   value, intervention and recovery datasets;
3. **grows the recovery memory** from successful episodes
   (:func:`uniintervene_jax.memory.mining.mine_online_memory`): the demos and every successful
   online episode that contains a recovery (operator or autonomous: ``action_source`` human or
   recovery); keys are re-embedded with the current proxy-value encoder at each refresh, so
   they never go stale; the recovery pairs come from
   :func:`uniintervene_jax.recovery.dataset.online_recovery_pairs`;
4. **keeps training** the proxy value, the intervention model and the goal-conditioned
   recovery policy: one update of the first two and ``recovery_updates`` of the recovery
   policy every ``train_period`` agent updates, after a
   ``pretrain_steps`` burst on the demos at start, and one round per learner loop pass while
   the agent still waits for ``learner.training_starts`` transitions (:meth:`warmup_step`);
5. hands the learner a **payload** for the actor (``payload()``,
   :func:`uniintervene_jax.message.make_payload`): parameters of the three models, the memory
   items, the trigger threshold tau (``trigger.tau_int``, the offline best-F1 threshold when
   the run starts from a pipeline folder, kept fixed unless ``tau_recalibrate``: then each
   refresh re-sweeps it, :func:`uniintervene_jax.gate.threshold_sweep`, on the held-out online
   episodes, every ``tau_holdout_every``-th, which the intervention model never trains on),
   ``ready`` and a version number that increases whenever anything in it changed.

Its config is ``config.uniintervene`` (``uniintervene_jax/online_config.py``); episodes are cut
by ``serl_ext.data.episodes.EpisodeAssembler``; the learner's extension slot holds it through
``uniintervene_jax/extension.py``.

The gate (``uniintervene_jax/gate.py``) is allowed to fire only once the payload is ``ready``:
at least ``min_episodes`` online episodes seen, ``min_updates`` intervention-model updates done
and a non-empty memory (unless ``use_memory_goal=False``).

Episodes terminate on success in every stand-in task (sparse reward 1, then terminate), so an
episode counts as successful when its last transition is terminal (``masks == 0``) or carries a
positive reward.
"""

import collections
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from serl_ext.data.episodes import EpisodeAssembler
from uniintervene_jax.gate import threshold_sweep
from uniintervene_jax.labels import label_episodes
from uniintervene_jax.memory.mining import mine_online_memory
from uniintervene_jax.message import build_models, make_payload
from uniintervene_jax.online_config import check_online_config
from uniintervene_jax.recovery.dataset import (
    current_observation_goals,
    online_recovery_pairs,
    recovery_batch_indices,
    retrieved_goals,
    take_pairs,
)
from uniintervene_jax.views import ViewEmbedder, uses_value_embedding, view_episode


def make_target_encoder(c, obs_spec, seed: int):
    """The frozen future-target encoder of ``c.target_encoder`` (``config.uniintervene``):
    ``"random"`` (a fixed random projection of the observation to ``c.value.latent_dim`` dims,
    seeded; DESIGN section 4 asks for a frozen target and the paper's is a frozen V-JEPA 2, which
    needs images), ``"random:N"`` (the same with each camera frame average-pooled to N x N
    first) or ``"hf:/local/folder"`` (a frozen transformers vision model). With
    ``c.init_from`` the encoder the offline intervention model was trained against
    (``model.json`` extra ``target_encoder``: the same random projection, a frozen copy of the
    offline proxy value, or the same transformers folder).

    Raises ValueError for another value."""
    from serl_ext.loop.common import example_observation
    from uniintervene_jax.intervention.target_encoders import (
        HFVisionTargetEncoder, ProxyValueTargetEncoder, RandomProjectionEncoder)

    if str(c.get("init_from", "") or ""):
        folder = os.path.join(str(c.init_from), "models")
        with open(os.path.join(folder, "intervention", "model.json")) as f:
            spec = json.load(f).get("extra", {}).get("target_encoder") or {}
        if spec.get("name") == "random":
            return RandomProjectionEncoder(example_observation(obs_spec), int(spec["dim"]), seed=int(spec["seed"]))
        if spec.get("name") == "proxy_value":
            from uniintervene_jax.value.model import ProxyValue

            return ProxyValueTargetEncoder(ProxyValue.load(os.path.join(folder, "value")))  # a frozen copy
        if str(spec.get("name", "")).startswith("hf:"):
            return HFVisionTargetEncoder(str(spec["name"])[3:])
        raise ValueError(f"{folder}/intervention/model.json names no known target encoder: {spec!r}")
    from uniintervene_jax.views import parse_random_target

    name = str(c.target_encoder)
    pool = parse_random_target(name)
    if pool == 0:
        return RandomProjectionEncoder(example_observation(obs_spec), int(c.value.latent_dim), seed=int(seed) + 29)
    if pool is not None:  # "random:N": camera frames average-pooled to N x N first
        return RandomProjectionEncoder(example_observation(obs_spec), int(c.value.latent_dim), seed=int(seed) + 29,
                                       image_pool=pool)
    if name.startswith("hf:"):
        return HFVisionTargetEncoder(name[3:])
    raise ValueError(f"uniintervene.target_encoder must be 'random', 'random:N' or 'hf:PATH', got {name!r}")


class OnlineUniIntervene:
    """Trains the UniIntervene models inside the learner process (module docstring).

    Args:
      config: the composed training config (``config.uniintervene``, ``config.task``, ``config.seed``).
      obs_spec: ``{key: (shape, dtype)}`` of one observation.
      action_dim: A.
      demo_episodes: the demo episodes (``serl_ext.data.episodes`` dicts), may be empty.
    Raises:
      ValueError: bad ``config.uniintervene`` (:func:`check_online_config`).
    """

    def __init__(self, config, obs_spec, action_dim: int, demo_episodes: Sequence[Dict[str, Any]] = ()):
        from serl_ext.loop.common import example_observation
        from uniintervene_jax.instructions import instruction_for, tokenize_instruction

        self.c = config.uniintervene
        check_online_config(self.c)
        self.task = config.task
        self.seed = int(config.seed)
        self.obs_spec = obs_spec
        self.action_dim = int(action_dim)
        self.instr = tokenize_instruction(instruction_for(self.task))
        self.example = example_observation(obs_spec)
        self.value, self.intervention, self.recovery = build_models(config, obs_spec, action_dim)
        self.demos = [dict(e, metadata=dict(e.get("metadata") or {}, task=self.task, source="demo"))
                      for e in demo_episodes]
        self.online: collections.deque = collections.deque(maxlen=int(self.c.max_episodes))
        self.assembler = EpisodeAssembler(self.task)
        self.rng = np.random.default_rng(self.seed + 17)
        # The future head's target: a frozen encoder built once (never retrained nor rebuilt), so
        # its latents do not drift between rebuilds and are not the proxy value's input.
        self.target_encoder = make_target_encoder(self.c, obs_spec, self.seed)
        self.memory_items = None
        self.tau = float(self.c.trigger.tau_int)  # the learner's tau, pushed with every payload
        if str(self.c.init_from):
            self._init_from(str(self.c.init_from))
        self.version = 0
        self.counters = collections.Counter()
        self.episodes_seen = 0
        self._since_refresh = 0
        self._value_data = None
        self._intervention_data = None
        self._recovery_pairs = None
        self.last_info: Dict[str, float] = {}

    def _init_from(self, run_dir: str) -> None:
        """Starts from an offline pipeline folder (``config.uniintervene.init_from``): its
        held-out best-F1 threshold and its recovery memory (the models themselves come from
        :func:`uniintervene_jax.message.build_models`). The memory is mined again from the demos
        and online episodes at the first refresh."""
        from uniintervene_jax.intervention.model import InterventionModel
        from uniintervene_jax.memory.memory import RecoveryMemory

        tau = InterventionModel.saved_trigger_threshold(os.path.join(run_dir, "models", "intervention"))
        if tau is not None:
            self.tau = tau
        mem_dir = os.path.join(run_dir, "memory")
        if os.path.isdir(mem_dir):
            self.memory_items = RecoveryMemory.load(mem_dir).items

    # ---- data
    def insert(self, transition: Dict[str, Any]) -> None:
        """Called for every transition the actor sends (transport thread)."""
        self.assembler.insert(transition)

    def _episodes(self) -> List[Dict[str, Any]]:
        return list(self.demos) + list(self.online)

    def pretrain(self, steps: Optional[int] = None, progress_bar: bool = False) -> Dict[str, float]:
        """Trains the proxy value and the recovery policy on the demos alone (``pretrain_steps``),
        then builds the datasets and the memory. A no-op without demos."""
        from tqdm.auto import tqdm

        steps = int(self.c.pretrain_steps if steps is None else steps)
        if not self.demos:
            return {}
        self._rebuild()
        for _ in tqdm(range(steps), desc="uniintervene pretrain", disable=not progress_bar):
            self._update_value()
            self._update_recovery()
        self._rebuild()
        self.version += 1
        return dict(self.last_info)

    def step(self, learner_step: int) -> Dict[str, Any]:
        """Called once per agent update: folds in finished episodes (relabel + rebuild every
        ``refresh_episodes``) and, every ``train_period`` steps, updates each model once.
        Returns ``last_info`` (its losses are device scalars; :meth:`stats` gives floats)."""
        return self._step(learner_step % int(self.c.train_period) == 0)

    def warmup_step(self) -> Dict[str, float]:
        """Called by the learner while the agent waits for ``learner.training_starts`` online
        transitions (``train_during_warmup``): folds in finished episodes and updates each model
        once, so the gate can get ready on the first online episodes instead of after the
        agent's warm-up (the UniIntervene models do not need the agent's replay warm-up)."""
        return self._step(True)

    def _step(self, train: bool) -> Dict[str, float]:
        new = self.assembler.pop_finished()
        if new:
            for j, e in enumerate(new):  # run-wide index (names the saved file; survives a resume)
                e["metadata"]["online_index"] = self.episodes_seen + j
            self.online.extend(new)
            self.episodes_seen += len(new)
            self._since_refresh += len(new)
            self.counters["online_successes"] += sum(bool(e["metadata"]["success"]) for e in new)
        if self._since_refresh >= int(self.c.refresh_episodes) or (
                self._intervention_data is None and self.episodes_seen >= 1 and self._since_refresh):
            self._since_refresh = 0
            self._rebuild()
            self.version += 1
        if train:
            self._update_value()
            self._update_intervention()
            for _ in range(int(self.c.recovery_updates)):
                self._update_recovery()
        return self.last_info

    @property
    def ready(self) -> bool:
        """Whether the gate may fire with the current models (module docstring)."""
        has_memory = self.memory_items is not None and len(self.memory_items) > 0
        return (self.episodes_seen >= int(self.c.min_episodes)
                and self.counters["intervention_updates"] >= int(self.c.min_updates)
                and (has_memory or not bool(self.c.use_memory_goal)))

    # ---- labels, datasets, memory
    def _rebuild(self) -> None:
        from uniintervene_jax.intervention.dataset import build_dataset
        from uniintervene_jax.value.dataset import ValueDataset
        from uniintervene_jax.value.model import value_curves

        t0 = time.time()
        episodes = self._episodes()
        if not episodes:
            return
        c = self.c
        self._value_data = ValueDataset.from_episodes(
            episodes, task=self.task, gamma=float(c.value.gamma), failure_weight=float(c.value.failure_weight))
        curves = value_curves(self.value, episodes, task=self.task)
        labels, tvr = label_episodes(episodes, curves, c.labels, history_len=int(c.intervention.history_len))
        held = self._held_out(episodes)
        train = [i for i in range(len(episodes)) if i not in held] or list(range(len(episodes)))
        self._intervention_data = build_dataset(
            [episodes[i] for i in train], [curves[i] for i in train], [labels[i] for i in train],
            [tvr[i] for i in train], self.target_encoder, instr_ids=self.instr,
            history_len=int(c.intervention.history_len), keep_next_observations=False)

        def embed(obs):
            return np.asarray(self.value.encode(obs, self.instr), np.float32)

        key_encoder = self.value
        if uses_value_embedding(c):
            # Image observations: the memory and the recovery pairs live on the recovery view
            # [state, z(o)] of each observation (uniintervene_jax/views.py): no camera frame is
            # copied into an item or a pair, and the keys are the view's z part.
            episodes = [view_episode(e, self.value, self.instr) for e in episodes]
            key_encoder = embed = ViewEmbedder(int(self.value.config.latent_dim))
        items, from_demo_fallback = mine_online_memory(episodes, curves, embed, c, self.task)
        self.memory_items = items
        self.last_info["uniintervene/memory_demo_fallback"] = float(from_demo_fallback)
        pairs = online_recovery_pairs(episodes, curves, c)
        if pairs is not None and len(pairs["actions"]) and not bool(c.use_memory_goal):
            pairs = current_observation_goals(pairs)  # w/o memory goal: the gate's run-time input
        elif pairs is not None and len(pairs["actions"]) and c.recovery_goals == "retrieved":
            anchor_values = np.array([curves[e][t] for e, t in zip(pairs["episode_index"], pairs["t"])], np.float64)
            pairs, found = retrieved_goals(pairs, anchor_values, key_encoder, self.instr, self.task, items)
            self.last_info["uniintervene/recovery_goal_retrieved"] = found
        self._recovery_pairs = pairs if pairs is not None and len(pairs["actions"]) else None
        if bool(c.tau_recalibrate) and held:
            self._calibrate_tau([episodes[i] for i in held], [curves[i] for i in held],
                                [labels[i] for i in held], [tvr[i] for i in held])
        self.counters["refreshes"] += 1
        self.last_info.update({
            "uniintervene/episodes": float(len(self.online)),
            "uniintervene/label_rate": float(np.mean(np.concatenate(labels))) if labels else 0.0,
            "uniintervene/memory_size": float(len(items) if items is not None else 0),
            "uniintervene/recovery_pairs": float(len(pairs["actions"]) if pairs is not None else 0),
            "uniintervene/refresh_s": time.time() - t0,
            "uniintervene/tau": self.tau,
        })

    def _held_out(self, episodes) -> List[int]:
        """Indices of the online episodes held out from intervention training for the threshold
        recalibration: every ``tau_holdout_every``-th online episode (by run-wide index), only
        with ``tau_recalibrate``; empty otherwise."""
        if not bool(self.c.tau_recalibrate):
            return []
        every = int(self.c.tau_holdout_every)
        return [i for i, e in enumerate(episodes) if e["metadata"].get("source") == "online"
                and int(e["metadata"].get("online_index", 0)) % every == every - 1]

    def _calibrate_tau(self, episodes, curves, labels, tvr) -> None:
        """tau = the best-F1 threshold (:func:`uniintervene_jax.gate.threshold_sweep`) of the
        current intervention model on the decision rows of the held-out online ``episodes``
        against their mined labels; unchanged when they hold no positive label."""
        from uniintervene_jax.intervention.dataset import build_dataset
        from uniintervene_jax.intervention.report import predict_dataset

        data = build_dataset(episodes, curves, labels, tvr, self.target_encoder, instr_ids=self.instr,
                             history_len=int(self.c.intervention.history_len), keep_next_observations=False)
        rows = data.decision_mask
        if not rows.any() or not data.labels[rows].any():
            return
        sweep = threshold_sweep(predict_dataset(self.intervention, data)["trigger_prob"][rows], data.labels[rows])
        self.tau = float(sweep["best_threshold"])
        self.counters["tau_recalibrations"] += 1
        self.last_info["uniintervene/tau_best_f1"] = float(sweep["best_f1"])

    # ---- updates
    def _update_value(self) -> None:
        if self._value_data is None:
            return
        batch = self._value_data.sample(self.rng, int(self.c.batch_size), float(self.c.value.failure_fraction))
        self.value, info = self.value.update(batch)
        self.counters["value_updates"] += 1
        self.last_info["uniintervene/value_loss"] = info["loss"]  # a device scalar: stats() converts

    def _update_intervention(self) -> None:
        if self._intervention_data is None:
            return
        batch = self._intervention_data.sample(self.rng, int(self.c.batch_size))
        self.intervention, info = self.intervention.update(batch)
        self.counters["intervention_updates"] += 1
        self.last_info["uniintervene/intervention_loss"] = info["loss"]

    def _update_recovery(self) -> None:
        if self._recovery_pairs is None:
            return
        idx = recovery_batch_indices(self._recovery_pairs["is_demo"], int(self.c.recovery_batch_size),
                                     self.c.recovery_demo_fraction, self.rng)
        self.recovery, info = self.recovery.update(take_pairs(self._recovery_pairs, idx))
        self.counters["recovery_updates"] += 1
        self.last_info["uniintervene/recovery_loss"] = info["train/loss"] if "train/loss" in info else info["loss"]

    # ---- actor payload, persistence
    def payload(self) -> Dict[str, Any]:
        """What the actor's gate needs (:func:`uniintervene_jax.message.make_payload`; all numpy,
        msgpack-able): ``version``, ``ready``, ``tau``, the three parameter trees, ``memory``."""
        return make_payload(self.version, self.ready, self.tau, self.value, self.intervention, self.recovery,
                            self.memory_items)

    def stats(self) -> Dict[str, float]:
        """The last losses and refresh numbers, the counters, ``ready`` and ``version``, as
        floats. The losses are kept as device scalars until here, so that an update does not
        wait for its result (one host sync per stats call instead of one per update)."""
        out = {k: float(v) for k, v in self.last_info.items()}
        out.update({f"uniintervene/{k}": float(v) for k, v in self.counters.items()})
        out["uniintervene/ready"] = float(self.ready)
        out["uniintervene/version"] = float(self.version)
        return out

    def save(self, directory: str) -> None:
        """Saves the three models (their own folders), the memory and the kept online episodes
        (``episodes/online_NNNNNNN.npz``: only new ones are written, dropped ones removed)
        under ``directory``."""
        from serl_ext.data.episodes import list_episodes, save_episode
        from uniintervene_jax.memory.memory import RecoveryMemory

        os.makedirs(directory, exist_ok=True)
        self.value.save(os.path.join(directory, "value"))
        self.intervention.save(os.path.join(directory, "intervention"))
        self.recovery.save(os.path.join(directory, "recovery"))
        if self.memory_items is not None:
            RecoveryMemory(items=self.memory_items).save(os.path.join(directory, "memory"))
        ep_dir = os.path.join(directory, "episodes")
        os.makedirs(ep_dir, exist_ok=True)
        kept = {f"online_{int(e['metadata']['online_index']):07d}.npz": e for e in self.online}
        on_disk = {os.path.basename(p): p for p in list_episodes(ep_dir)}
        for name, episode in kept.items():
            if name not in on_disk:
                save_episode(os.path.join(ep_dir, name), episode)
        for name, path in on_disk.items():
            if name not in kept:
                os.remove(path)
        from serl_ext.loop.common import atomic_write_json

        atomic_write_json(os.path.join(directory, "state.json"), {
            "version": self.version, "tau": self.tau, "episodes_seen": self.episodes_seen,
            "counters": dict(self.counters)})

    def restore(self, directory: str) -> bool:
        """Reloads what :meth:`save` wrote (fresh optimiser states); the kept online episodes
        come back too and the datasets are rebuilt from them at the next :meth:`step`. Returns
        False when nothing is there.

        Raises:
          serl_ext.data.episodes.EpisodeFormatError: a saved episode file is corrupt (names it).
        """
        from serl_ext.data.episodes import list_episodes, load_episode
        from uniintervene_jax.intervention.model import InterventionModel
        from uniintervene_jax.memory.memory import RecoveryMemory
        from uniintervene_jax.recovery.model import RecoveryPolicy
        from uniintervene_jax.value.model import ProxyValue

        state_path = os.path.join(directory, "state.json")
        if not os.path.exists(state_path):
            return False
        with open(state_path) as f:
            state = json.load(f)
        self.value = ProxyValue.load(os.path.join(directory, "value"))
        self.intervention = InterventionModel.load(os.path.join(directory, "intervention"))
        self.recovery = RecoveryPolicy.load(os.path.join(directory, "recovery"), seed=self.seed)
        mem_dir = os.path.join(directory, "memory")
        self.memory_items = RecoveryMemory.load(mem_dir).items if os.path.isdir(mem_dir) else None
        self.version = int(state["version"]) + 1
        self.tau = float(state["tau"])
        self.episodes_seen = int(state["episodes_seen"])
        self.counters.update(state["counters"])
        ep_dir = os.path.join(directory, "episodes")
        restored = [load_episode(p) for p in list_episodes(ep_dir)] if os.path.isdir(ep_dir) else []
        restored.sort(key=lambda e: int(e["metadata"]["online_index"]))
        self.online.clear()
        self.online.extend(restored)
        self._since_refresh = len(restored)  # rebuild labels, datasets and memory at the next step
        self._intervention_data = None
        return True
