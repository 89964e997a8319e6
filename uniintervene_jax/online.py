"""UniIntervene online: the learner side (models trained while HiL-SERL runs).

The learner process of ``hil_serl+uniintervene`` (``serl_ext/loop/learner.py``) owns one
:class:`OnlineUniIntervene`. It

1. **assembles episodes** from the transitions the actor streams (every transition goes to the
   online store; :class:`EpisodeAssembler` cuts them into ``serl_ext.data.episodes`` dicts at
   ``dones``; a transition whose observation does not continue the open episode, e.g. after an
   actor restart, drops the partial episode);
2. **computes labels when an episode ends** (at the next refresh, every
   ``refresh_episodes`` finished episodes): the proxy-value curve of every kept episode, the
   stagnation labels (mining rules, DESIGN section 4) and the TVR targets, then rebuilds the
   value, intervention and recovery datasets;
3. **grows the recovery memory** from successful episodes: the demos and every successful
   online episode that contains a recovery (operator or autonomous: ``action_source`` human or
   recovery); keys are re-embedded with the current proxy-value encoder at each refresh, so
   they never go stale;
4. **keeps training** the proxy value, the intervention model and the goal-conditioned
   recovery policy: one update of the first two and ``recovery_updates`` of the recovery
   policy every ``train_period`` agent updates, after a
   ``pretrain_steps`` burst on the demos at start, and one round per learner loop pass while
   the agent still waits for ``learner.training_starts`` transitions (:meth:`warmup_step`);
5. hands the learner a **payload** for the actor (``payload()``): parameters of the three
   models, the memory items, the trigger threshold, ``ready`` and a version number that
   increases whenever anything in it changed.

The gate (``uniintervene_jax/gate.py``) is allowed to fire only once the payload is ``ready``:
at least ``min_episodes`` online episodes seen, ``min_updates`` intervention-model updates done
and a non-empty memory (unless ``use_memory_goal=False``).

Episodes terminate on success in every stand-in task (sparse reward 1, then terminate), so an
episode counts as successful when its last transition is terminal (``masks == 0``) or carries a
positive reward.
"""

import collections
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import numpy as np

# Shared with the actor's gate (re-exported here for existing callers).
from serl_ext.data.episodes import EpisodeAssembler  # noqa: F401
from uniintervene_jax.online_config import (  # noqa: F401
    RECOVERY_BUFFERS,
    RECOVERY_GOALS,
    build_models,
    check_online_config,
    get_online_config,
    memory_from_payload,
    memory_to_payload,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- learner side
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
        self.memory_items = None
        self.tau = float(self.c.intervention.tau_int)
        self.version = 0
        self.counters = collections.Counter()
        self.episodes_seen = 0
        self._since_refresh = 0
        self._value_data = None
        self._intervention_data = None
        self._recovery_pairs = None
        self.last_info: Dict[str, float] = {}

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

    def step(self, learner_step: int) -> Dict[str, float]:
        """Called once per agent update: folds in finished episodes (relabel + rebuild every
        ``refresh_episodes``) and, every ``train_period`` steps, updates each model once."""
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
        from uniintervene_jax.intervention.mining import mine_stagnation
        from uniintervene_jax.intervention.target_encoders import ProxyValueTargetEncoder
        from uniintervene_jax.intervention.train import build_dataset
        from uniintervene_jax.intervention.tvr import tvr_targets
        from uniintervene_jax.value.report import value_curves
        from uniintervene_jax.value.train import ValueDataset

        t0 = time.time()
        episodes = self._episodes()
        if not episodes:
            return
        c = self.c
        self._value_data = ValueDataset.from_episodes(
            episodes, task=self.task, gamma=float(c.value.gamma), failure_weight=float(c.value.failure_weight))
        curves = value_curves(self.value, episodes, task=self.task)
        labels, tvr = [], []
        for episode, curve in zip(episodes, curves):
            steps = curve[:-1]
            labels.append(mine_stagnation(steps, {"rule": c.mining_rule})
                          | takeover_labels(episode["interventions"], int(c.takeover_label_steps)))
            tvr.append(tvr_targets(steps, K=int(c.history_len), eps=float(c.tvr_eps), gamma_r=float(c.tvr_gamma_r),
                                   clip_negative=bool(c.tvr_clip_negative)))
        self._intervention_data = build_dataset(
            episodes, curves, labels, tvr, ProxyValueTargetEncoder(self.value), instr_ids=self.instr,
            history_len=int(c.history_len), keep_next_observations=False)
        def embed(obs):
            return np.asarray(self.value.encode(obs, self.instr), np.float32)

        items, from_demo_fallback = mine_online_memory(episodes, curves, embed, c, self.task)
        self.memory_items = items
        self.last_info["uniintervene/memory_demo_fallback"] = float(from_demo_fallback)
        pairs = _recovery_pairs(episodes, curves, c)
        if pairs is not None and len(pairs["actions"]) and c.recovery_goals == "retrieved":
            anchor_values = np.array([curves[e][t] for e, t in zip(pairs["episode_index"], pairs["t"])], np.float64)
            pairs, found = retrieved_goals(pairs, anchor_values, self.value, self.instr, self.task, items)
            self.last_info["uniintervene/recovery_goal_retrieved"] = found
        self._recovery_pairs = pairs if pairs is not None and len(pairs["actions"]) else None
        if float(c.tau_quantile) > 0:
            self._calibrate_tau(episodes, curves)
        self.counters["refreshes"] += 1
        self.last_info.update({
            "uniintervene/episodes": float(len(self.online)),
            "uniintervene/label_rate": float(np.mean(np.concatenate(labels))) if labels else 0.0,
            "uniintervene/memory_size": float(len(items) if items is not None else 0),
            "uniintervene/recovery_pairs": float(len(pairs["actions"]) if pairs is not None else 0),
            "uniintervene/refresh_s": time.time() - t0,
            "uniintervene/tau": self.tau,
        })

    def _calibrate_tau(self, episodes, curves) -> None:
        """tau = the ``tau_quantile`` quantile of sigmoid(risk) over policy steps of recent
        successful online episodes (at least ``tau_int``)."""
        from uniintervene_jax.intervention.train import history_windows

        probs = []
        for e, curve in zip(episodes, curves):
            if e["metadata"].get("source") != "online" or not e["metadata"].get("success"):
                continue
            mask = np.asarray(e["action_source"]) == 0
            if not mask.any():
                continue
            hist = history_windows(curve[:-1], int(self.c.history_len))
            obs = {k: v[:-1][mask] for k, v in e["observations"].items()}
            out = self.intervention.predict(obs, self.instr, e["actions"][mask], hist[mask])
            probs.append(out["trigger_prob"])
        if probs:
            self.tau = max(float(self.c.intervention.tau_int), float(np.quantile(np.concatenate(probs),
                                                                                   float(self.c.tau_quantile))))

    # ---- updates
    def _update_value(self) -> None:
        if self._value_data is None:
            return
        batch = self._value_data.sample(self.rng, int(self.c.batch_size), float(self.c.value.failure_fraction))
        self.value, info = self.value.update(batch)
        self.counters["value_updates"] += 1
        self.last_info["uniintervene/value_loss"] = float(info["loss"])

    def _update_intervention(self) -> None:
        if self._intervention_data is None:
            return
        batch = self._intervention_data.sample(self.rng, int(self.c.batch_size),
                                               balanced=bool(self.c.intervention.balanced_sampling),
                                               positive_fraction=float(self.c.intervention.positive_fraction))
        self.intervention, info = self.intervention.update(batch)
        self.counters["intervention_updates"] += 1
        self.last_info["uniintervene/intervention_loss"] = float(info["loss"])

    def _update_recovery(self) -> None:
        from uniintervene_jax.recovery.train import _take

        if self._recovery_pairs is None:
            return
        idx = recovery_batch_indices(self._recovery_pairs["is_demo"], int(self.c.recovery_batch_size),
                                     self.c.recovery_demo_fraction, self.rng)
        self.recovery, info = self.recovery.update(_take(self._recovery_pairs, idx))
        self.counters["recovery_updates"] += 1
        self.last_info["uniintervene/recovery_loss"] = float(info["train/loss"] if "train/loss" in info else info["loss"])

    # ---- actor payload, persistence
    def payload(self) -> Dict[str, Any]:
        """What the actor's gate needs (all numpy; msgpack-able): ``version``, ``ready``, ``tau``,
        ``value`` / ``intervention`` / ``recovery`` parameter trees and ``memory``
        (:func:`memory_to_payload`)."""
        to_np = lambda tree: jax.tree.map(np.asarray, jax.device_get(tree))  # noqa: E731
        return {
            "version": int(self.version),
            "ready": bool(self.ready),
            "tau": float(self.tau),
            "value": to_np(self.value.state.params),
            "intervention": to_np(self.intervention.state.params),
            "recovery": to_np(self.recovery.state.params),
            "memory": memory_to_payload(self.memory_items),
        }

    def stats(self) -> Dict[str, float]:
        out = dict(self.last_info)
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
        from uniintervene_jax.intervention.train import InterventionModel
        from uniintervene_jax.memory.memory import RecoveryMemory
        from uniintervene_jax.recovery.model import RecoveryPolicy
        from uniintervene_jax.value.train import ProxyValue

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


def mine_online_memory(episodes, curves, embed, c, task: str):
    """The online recovery memory: items mined (``c.memory_preset``) from the demos and the
    successful online episodes that contain a recovery (human or autonomous).

    Demos progress steadily, so on slower tasks no window of a demo rises by the preset's delta
    (assembly and box-close demos climb 0.2-0.4 in 8 steps against delta 0.5) and the memory
    would stay empty, and the gate not ready, until operator recoveries have been mined (about
    20 episodes into a run). While the preset finds no item at all, the demos are mined again
    with the smaller rise ``c.memory_demo_delta`` (0: no fallback); the first mined online
    recovery replaces these items at the next rebuild.

    Args:
      episodes: episode dicts (demos first or not; ``metadata["source"]`` says which).
      curves: one proxy-value curve float ``(T+1,)`` per episode (raw; min-max normalised here
        per episode, as the offline pipeline does).
      embed: ``observations -> float32 (B, D)`` key/goal embedding.
      c: ``config.uniintervene``.
      task: task name stored with the items.
    Returns:
      ``(RecoveryItems or None, whether the demo fallback produced them)``.
    Raises:
      KeyError: unknown ``c.memory_preset``; ValueError: bad curves (:func:`mine_recovery_items`).
    """
    import dataclasses

    from uniintervene_jax.memory.mining import mine_recovery_items, mining_preset, normalize_value_curve

    preset = mining_preset(c.memory_preset)

    def mine(idx, config):
        if not idx:
            return None
        return mine_recovery_items([episodes[i] for i in idx], [normalize_value_curve(curves[i]) for i in idx],
                                   embed, config, episode_ids=idx, tasks=[task] * len(idx))

    demo_idx = [i for i, e in enumerate(episodes) if e["metadata"].get("source") == "demo"]
    chosen = [i for i, e in enumerate(episodes)
              if e["metadata"].get("source") == "demo" or (e["metadata"].get("success") and e["metadata"].get("recovered"))]
    items = mine(chosen, preset)
    if items is not None and len(items):
        return items, False
    fallback = float(c.memory_demo_delta)
    if fallback <= 0.0 or fallback >= preset.delta or not demo_idx:
        return items, False
    items = mine(demo_idx, dataclasses.replace(preset, delta=fallback))
    return items, items is not None and len(items) > 0


def takeover_labels(interventions: Any, steps: int) -> np.ndarray:
    """bool ``(T,)``: the ``steps`` non-human steps before each human takeover onset.

    A takeover onset is a step ``s`` with ``interventions[s]`` and not ``interventions[s-1]``;
    steps ``max(0, s - steps) .. s-1`` are labelled unless the human acted there.
    Raises ValueError for a non-1-D input or ``steps < 0``.
    """
    human = np.asarray(interventions, bool)
    if human.ndim != 1:
        raise ValueError(f"interventions must be (T,), got shape {human.shape}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = np.zeros_like(human)
    if steps == 0:
        return out
    onsets = np.flatnonzero(human & ~np.concatenate([[False], human[:-1]]))
    for s in onsets:
        out[max(0, s - steps): s] = True
    return out & ~human


def _recovery_pairs(episodes, curves, c):
    """Recovery training pairs: every step of the demos, and in online episodes the anchors of
    ``c.recovery_anchors``; goals ``goal_offset`` steps ahead with a value gain > 0."""
    from uniintervene_jax.recovery.train import recovery_training_pairs

    if c.recovery_anchors not in ("interventions", "all"):
        raise ValueError(f"uniintervene.recovery_anchors must be 'interventions' or 'all', got {c.recovery_anchors!r}")
    parts = []
    demo_idx = [i for i, e in enumerate(episodes) if e["metadata"].get("source") == "demo"]
    online_idx = [i for i, e in enumerate(episodes) if e["metadata"].get("source") != "demo"]
    for idx, successes, gain in ((demo_idx, True, 0.0),
                                 (online_idx, c.recovery_anchors == "all", float(c.recovery_min_gain))):
        if idx:
            part = recovery_training_pairs([episodes[i] for i in idx], [curves[i] for i in idx],
                                           horizon=int(c.horizon), goal_offset=int(c.goal_offset),
                                           use_successes=successes, use_interventions=True, min_value_gain=gain)
            # episode_index relative to `episodes` (the memory's episode ids), not to the subset
            part["episode_index"] = np.asarray(idx, np.int32)[part["episode_index"]]
            part["is_demo"] = np.full(len(part["actions"]), idx is demo_idx)
            parts.append(part)
    parts = [p for p in parts if len(p["actions"])]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def recovery_batch_indices(is_demo: np.ndarray, batch_size: int, demo_fraction: Optional[float],
                           rng: np.random.Generator) -> np.ndarray:
    """Row indices of one recovery-policy batch (with replacement).

    ``round(demo_fraction * batch_size)`` rows from the demo pairs (``is_demo``, bool ``(N,)``)
    and the rest from the others; when one side is empty the whole batch comes from the other.
    ``demo_fraction=None``: uniform over all N rows. Returns int64 ``(batch_size,)``.
    Raises ValueError for N = 0.
    """
    is_demo = np.asarray(is_demo, bool)
    n = len(is_demo)
    if n == 0:
        raise ValueError("no recovery pairs to sample from")
    if demo_fraction is None:
        return rng.integers(0, n, size=batch_size)
    demo, other = np.flatnonzero(is_demo), np.flatnonzero(~is_demo)
    n_demo = int(round(float(demo_fraction) * batch_size))
    if len(demo) == 0:
        n_demo = 0
    elif len(other) == 0:
        n_demo = batch_size
    return np.concatenate([rng.choice(demo, n_demo), rng.choice(other, batch_size - n_demo)]).astype(np.int64)


def retrieved_goals(pairs: Dict[str, Any], values: np.ndarray, value, instr: np.ndarray, task: str, items) -> tuple:
    """Replaces each pair's goal by the goal the gate would retrieve at its anchor.

    For anchor ``o_t`` (episode ``e``): the memory's top-5 cosine neighbours of the proxy-value
    embedding of ``o_t`` among items of other episodes than ``e``, first one whose goal value is
    above ``V(o_t)`` (:meth:`RecoveryMemory.retrieve_batch`, the rule the gate uses). Anchors
    without such an item keep their hindsight goal ``o_{t+k}``.

    Args:
      pairs: :func:`recovery_training_pairs` output with ``episode_index`` into the memory's
        episode ids.
      values: float ``(N,)`` proxy value ``V(o_t)`` of each anchor (from the value curves).
      value: the :class:`ProxyValue` whose encoder embedded the memory keys.
      instr: int32 ``(16,)`` instruction ids.
      task: the task name of the memory items.
      items: :class:`RecoveryItems` or None (then nothing changes).
    Returns:
      ``(pairs with new goal_observations, fraction of anchors that got a retrieved goal)``.
    Raises:
      ValueError: ``values`` not ``(N,)`` or not finite (:meth:`RecoveryMemory.retrieve_batch`).
    """
    from uniintervene_jax.memory.memory import RecoveryMemory

    if items is None or len(items) == 0:
        return pairs, 0.0
    memory = RecoveryMemory(items=items)
    obs = pairs["observations"]
    emb = np.asarray(value.encode(obs, instr), np.float32)
    found = memory.retrieve_batch(emb, task, np.asarray(values, np.float64), exclude_episodes=[int(i) for i in pairs["episode_index"]])
    goals = {k: np.array(v, copy=True) for k, v in pairs["goal_observations"].items()}
    hit = 0
    for row, item in enumerate(found):
        if item is None:
            continue
        hit += 1
        for k in goals:
            goals[k][row] = item.goal_observations[k]
    return dict(pairs, goal_observations=goals), hit / max(len(found), 1)


# ----------------------------------------------------------------------------- learner extension
class UniInterveneLearnerExtension:
    """:class:`OnlineUniIntervene` in the learner's extension slot
    (``serl_ext.loop.extension.LearnerExtension``): every transition feeds the episode
    assembler, one training round per :meth:`train_step` (``train_period`` schedule) and per
    warm-up pass (``train_during_warmup``), the payload goes out as the ``"uniintervene"``
    message part at most every ``publish_period`` learner steps (or when forced), and its
    files live in ``{run_dir}/uniintervene``.

    Args:
      ui: the trainer. publish_period: learner steps between parts. train_during_warmup:
        train while the agent waits for ``learner.training_starts``.
    """

    name = "uniintervene"

    def __init__(self, ui: OnlineUniIntervene, publish_period: int, train_during_warmup: bool):
        self.ui = ui
        self.publish_period = int(publish_period)
        self.train_during_warmup = bool(train_during_warmup)
        self._published_step = -(10**9)

    def on_transition(self, transition: Dict[str, Any]) -> None:
        self.ui.insert(transition)

    def warmup_step(self) -> bool:
        if not self.train_during_warmup:
            return False
        self.ui.warmup_step()  # the UniIntervene models need no agent warm-up
        return True

    def train_step(self, learner_step: int) -> None:
        self.ui.step(learner_step)

    def message_part(self, learner_step: int, force: bool) -> Optional[Dict[str, Any]]:
        # A few MB; re-sent even when unchanged, so an actor that connects late still gets it.
        if not force and learner_step - self._published_step < self.publish_period:
            return None
        self._published_step = learner_step
        return self.ui.payload()

    def stats(self) -> Dict[str, float]:
        return self.ui.stats()

    def save(self, directory: str) -> None:
        self.ui.save(directory)

    def restore(self, directory: str) -> bool:
        return self.ui.restore(directory)


def make_learner_extension(config, obs_spec, action_dim: int, run_dir: str,
                           resumed: bool) -> Optional[UniInterveneLearnerExtension]:
    """The learner-extension factory of the ``hil_serl+uniintervene`` algorithms
    (``config.components.learner_extension``): restored from ``{run_dir}/uniintervene`` on
    resume, else pretrained on the first ``config.demos.num_demos`` demo episodes. None when
    ``config.uniintervene.enabled`` is off.

    Raises:
      ValueError: bad ``config.uniintervene`` (:func:`check_online_config`).
    """
    from tqdm import tqdm

    from serl_ext.data.episodes import list_episodes, load_episode
    from serl_ext.loop.common import demo_dir_for

    if not bool(config.uniintervene.enabled):
        return None
    directory = demo_dir_for(config)
    paths = list_episodes(directory) if os.path.isdir(directory) else []
    demos = [load_episode(p) for p in paths[: int(config.demos.num_demos)]]
    ui = OnlineUniIntervene(config, obs_spec, action_dim, demos)
    ext = UniInterveneLearnerExtension(ui, int(config.uniintervene.publish_period),
                                       bool(config.uniintervene.train_during_warmup))
    if resumed and ui.restore(os.path.join(run_dir, ext.name)):
        tqdm.write(f"[learner] UniIntervene models restored (version {ui.version})")
    else:
        t0 = time.time()
        ui.pretrain(progress_bar=config.logging.progress_bar)
        tqdm.write(f"[learner] UniIntervene pretrained on {len(demos)} demos in {time.time() - t0:.1f} s")
    return ext
