"""The offline UniIntervene pipeline: recorded episodes -> trained models -> report.

Stages (each reads its inputs from the run folder, so any stage can be rerun alone):

========  =====================================================  ==============================
stage     does                                                   writes (under run_dir)
========  =====================================================  ==============================
data      demos, weak-policy rollouts, operator-assisted          ``data/`` (episodes, manifest)
          rollouts (``uniintervene_jax.offline_data``)
value     proxy value V(o, l) on the training split; report       ``models/value/``,
          (AUROC, monotonic fraction, curves plot)                ``report/value_*``
labels    value curves of every episode, stagnation labels        ``labels.npz``
          (mining rules), TVR targets (``labels.label_episodes``)
interv    intervention model (frozen target encoder); trigger     ``models/intervention/``,
          threshold = best F1 on held-out episodes (stored in     ``report/intervention_*``
          the model folder); report on held-out episodes
memory    recovery memory from successful episodes, keyed by      ``memory/``,
          the proxy value encoder; audit                          ``report/memory_audit*``
recovery  FAST tokenizer + goal-conditioned recovery policy;      ``models/recovery/``,
          held-out chunk error; closed loop in simulation          ``report/recovery.json``
report    ``metrics.json`` (benchmark keys) and ``report.md``     ``metrics.json``, ``report.md``
========  =====================================================  ==============================

Held-out split: every ``holdout_every``-th episode of each kind (demos, rollouts, assisted) is
held out from all training and used by every report.

Closed loop (``recovery`` stage): for held-out assisted episodes with an operator takeover, the
env is rebuilt with the episode's seed and the recorded actions are replayed up to the takeover
step (MuJoCo is deterministic; a replay whose observation drifts from the recorded one by more
than 1e-4 is skipped and counted). From that state the memory is queried with the proxy value
encoder and up to ``closed_loop.max_chunks`` recovery chunks (H = 8) are executed, re-retrieving
a goal before each chunk. An attempt counts as a recovery when the task succeeds, the proxy
value rises by at least ``closed_loop.value_gain``, or the goal region is reached (hand and
object positions, raw state dims 0:3 and 4:7, within ``closed_loop.goal_radius`` metres of the
goal's). With ``use_memory_goal=False`` (ablation) the goal is the current observation itself.

Shared with the online trainer: the labelling (``uniintervene_jax/labels.py``, config section
``labels``) and the trigger rule (``uniintervene_jax/gate.py``, section ``trigger``).
"""

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import ml_collections
import numpy as np

STAGES = ("data", "value", "labels", "intervention", "memory", "recovery", "report")


def get_pipeline_config(task: str = "pick-place") -> ml_collections.ConfigDict:
    """Pipeline defaults; every field documented inline."""
    from uniintervene_jax.gate import get_trigger_config
    from uniintervene_jax.intervention.config import get_default_config as intervention_config
    from uniintervene_jax.labels import get_labels_config
    from uniintervene_jax.recovery.config import get_default_config as recovery_config
    from uniintervene_jax.value.config import get_default_config as value_config

    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = 0
    c.holdout_every = 4  # Every 4th episode of each kind is held out (25%).
    c.data = ml_collections.ConfigDict()
    c.data.dir = ""  # Reuse recorded data from here; "" = {run_dir}/data (collected if missing).
    c.data.num_demos = 20
    c.data.num_rollouts = 30
    c.data.num_assisted = 30
    c.data.bc_steps = 300  # Updates of the weak BC base policy (few => it fails/gets stuck).
    c.value = value_config()
    c.value_steps = 2000
    # Stagnation-label rule and TVR parameters (uniintervene_jax/labels.py, the online trainer's
    # schema); the TVR window K is intervention.history_len.
    c.labels = get_labels_config()
    c.intervention = intervention_config()
    c.intervention_steps = 2000
    # The trigger (uniintervene_jax/gate.py): tau_int is used only when calibrate_threshold is
    # off; otherwise tau = the best-F1 threshold of the sweep 0.05 .. 0.95 on the held-out
    # episodes' decision rows (gate.threshold_sweep, the official threshold_sweep_metrics),
    # stored in models/intervention/model.json (extra trigger_threshold); an online run started
    # from this folder keeps it.
    c.trigger = get_trigger_config()
    c.calibrate_threshold = True
    # Frozen target encoder of the future latent: "random" (default: a fixed, seeded random
    # projection of the observation, independent of the proxy value), "proxy_value" (the trained
    # proxy value's encoder, frozen after the value stage; the Q head then reads V's own input)
    # or "hf:/local/folder" (a transformers vision model such as V-JEPA 2, the paper's target,
    # or SigLIP saved with save_pretrained; needs image observations and `pip install -e .[vlm]`).
    c.target_encoder = "random"
    c.memory = ml_collections.ConfigDict()
    c.memory.preset = "default"  # "default" (120 items, 10 bins, span 8, delta 0.5) | "fold_towel".
    c.memory.index_type = "flat"  # "flat" (exact inner product) | "hnsw" (approximate).
    # Smaller value rise used only when the preset mines no item at all (as online,
    # config.uniintervene.memory_demo_delta): on assembly the offline episodes' 8-step windows
    # never rise by the preset's 0.5, and the stage failed. 0: no fallback (the stage raises).
    c.memory.fallback_delta = 0.2
    c.recovery = recovery_config()
    c.recovery_steps = 1500
    c.recovery_batch_size = 64
    # Ablation (w/o memory goal): False -> the recovery policy is trained with, and the closed loop
    # run with, the current observation as its goal (no memory).
    c.use_memory_goal = True
    # Goals the recovery policy is trained on (with use_memory_goal): "retrieved" (each training
    # anchor's goal is what the gate retrieves for it from the memory: an item of another episode
    # with a higher value, else the hindsight goal; the online trainer's default,
    # config.uniintervene.recovery_goals) or "future" (the hindsight goal o_{t+k} of the same
    # episode). The policy acts on retrieved goals, and an online run starts from it:
    # benchmarks/results/recovery_goals.md measured hindsight training goals worst (mean IR 0.680
    # against 0.549 retrieved).
    c.recovery_goals = "retrieved"
    # Training anchors of the recovery policy: "interventions" (default; the online trainer's
    # rule, uniintervene.recovery_anchors: every step of the demos and the operator's steps of
    # the rollouts) or "all" (also every step of the assisted rollouts that succeeded, i.e. the
    # weak SFT policy's own actions in episodes the operator rescued; the default before
    # 2026-12-01). With the BC policy + offline gate + operator on pick-place
    # (benchmarks/gate_with_operator.py --base=bc, 20 episodes, BC 2,000 updates) the operator's
    # steps went 636 -> 726 with "all" and 636 -> 518 with "interventions".
    c.recovery_anchors = "interventions"
    c.closed_loop = ml_collections.ConfigDict()
    c.closed_loop.episodes = 10  # Held-out takeover states tried.
    c.closed_loop.max_chunks = 3
    c.closed_loop.value_gain = 0.05
    c.closed_loop.goal_radius = 0.05
    c.progress_bar = True
    return c


def _split(episodes: Sequence[Dict[str, Any]], every: int):
    train = [e for i, e in enumerate(episodes) if i % every != every - 1]
    held = [e for i, e in enumerate(episodes) if i % every == every - 1]
    return train, held


class Pipeline:
    """Runs the stages of the offline pipeline for one task in ``run_dir``.

    Args:
      config: :func:`get_pipeline_config` (possibly overridden).
      run_dir: output folder (created).
    """

    def __init__(self, config: ml_collections.ConfigDict, run_dir: str):
        self.config = config
        self.run_dir = os.path.abspath(run_dir)
        self.report_dir = os.path.join(self.run_dir, "report")
        os.makedirs(self.report_dir, exist_ok=True)
        self._data = None
        self._value = None
        self.timings: Dict[str, float] = {}

    # ----------------------------------------------------------------- helpers
    @property
    def data_dir(self) -> str:
        return os.path.abspath(self.config.data.dir or os.path.join(self.run_dir, "data"))

    def _train_config(self):
        from configs.train import get_config

        return get_config(f"{self.config.task},hil_serl")

    def data(self):
        if self._data is None:
            from uniintervene_jax.offline_data import load_offline_data

            data = load_offline_data(self.data_dir)
            every = int(self.config.holdout_every)
            split = {"train": [], "held": []}
            for kind in ("demos", "rollouts", "assisted"):
                for i, e in enumerate(data[kind]):
                    e["metadata"]["episode_id"] = f"{kind}/{i}"
                train, held = _split(data[kind], every)
                split["train"] += train
                split["held"] += held
            data.update(split)
            self._data = data
        return self._data

    def value_model(self):
        if self._value is None:
            from uniintervene_jax.value.model import ProxyValue

            self._value = ProxyValue.load(os.path.join(self.run_dir, "models", "value"))
        return self._value

    def _instr(self):
        from uniintervene_jax.instructions import instruction_for, tokenize_instruction

        return tokenize_instruction(instruction_for(self.config.task))

    def _write_json(self, name: str, obj: Any) -> None:
        from serl_ext.loop.common import atomic_write_json

        atomic_write_json(os.path.join(self.report_dir, name), obj)

    def _read_json(self, name: str) -> Dict[str, Any]:
        path = os.path.join(self.report_dir, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing; run the stage that writes it first")
        with open(path) as f:
            return json.load(f)

    def _labels(self):
        path = os.path.join(self.run_dir, "labels.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing; run the 'labels' stage first")
        with np.load(path, allow_pickle=False) as z:
            n = int(z["num_episodes"])
            names = [str(x) for x in z["episode_ids"]]
            curves = [z[f"curve_{i}"] for i in range(n)]
            labels = [z[f"labels_{i}"] for i in range(n)]
            tvr = [z[f"tvr_{i}"] for i in range(n)]
        return dict(zip(names, zip(curves, labels, tvr)))

    # ----------------------------------------------------------------- stages
    def run(self, stages: Sequence[str] = STAGES) -> Dict[str, Any]:
        """Runs ``stages`` in order; returns the metrics dict of the report stage (if run)."""
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; known: {STAGES}")
        result: Dict[str, Any] = {}
        for stage in STAGES:
            if stage in stages:
                t0 = time.time()
                print(f"[pipeline] {self.config.task}: stage {stage}", flush=True)
                out = getattr(self, f"stage_{stage}")()
                self.timings[stage] = time.time() - t0
                if stage == "report":
                    result = out
        return result

    def stage_data(self):
        from uniintervene_jax.offline_data import collect_offline_data

        c = self.config.data
        train_config = self._train_config()
        return collect_offline_data(
            train_config, self.data_dir, num_demos=c.num_demos, num_rollouts=c.num_rollouts,
            num_assisted=c.num_assisted, bc_steps=c.bc_steps, seed=self.config.seed,
            progress_bar=self.config.progress_bar,
        )

    def stage_value(self):
        from uniintervene_jax.value.report import value_report
        from uniintervene_jax.value.train import train_proxy_value

        data = self.data()
        model = train_proxy_value(data["train"], self.config.value, steps=int(self.config.value_steps),
                                  progress_bar=self.config.progress_bar, task=self.config.task)
        model.save(os.path.join(self.run_dir, "models", "value"))
        self._value = model
        report = value_report(model, data["held"], fraction=0.5, out_dir=self.report_dir, task=self.config.task)
        self._write_json("value_report.json", report)
        return report

    def stage_labels(self):
        from uniintervene_jax.labels import label_episodes
        from uniintervene_jax.value.model import value_curves

        data = self.data()
        episodes = data["train"] + data["held"]
        curves = value_curves(self.value_model(), episodes, task=self.config.task)
        labels, tvr = label_episodes(episodes, curves, self.config.labels,
                                     history_len=int(self.config.intervention.history_len))
        arrays: Dict[str, np.ndarray] = {"num_episodes": np.array(len(episodes))}
        arrays["episode_ids"] = np.array([e["metadata"]["episode_id"] for e in episodes])
        for i, curve in enumerate(curves):
            arrays[f"curve_{i}"] = curve
            arrays[f"labels_{i}"] = labels[i]
            arrays[f"tvr_{i}"] = tvr[i]
        np.savez(os.path.join(self.run_dir, "labels.npz"), **arrays)
        rate = [y.mean() if len(y) else 0.0 for y in labels]
        summary = {"episodes": len(episodes), "label_rate_mean": float(np.mean(rate))}
        self._write_json("labels.json", summary)
        return summary

    def _intervention_dataset(self, episodes, target_encoder):
        from uniintervene_jax.intervention.dataset import build_dataset

        table = self._labels()
        rows = [table[e["metadata"]["episode_id"]] for e in episodes]
        return build_dataset(
            episodes, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
            target_encoder, instr_ids=self._instr(), history_len=int(self.config.intervention.history_len),
        )

    def stage_intervention(self):
        from uniintervene_jax.gate import threshold_sweep
        from uniintervene_jax.intervention.report import intervention_report, predict_dataset
        from uniintervene_jax.intervention.train import train_intervention_model

        data = self.data()
        target = self._target_encoder()
        train_set = self._intervention_dataset(data["train"], target)
        model, _ = train_intervention_model(train_set, self.config.intervention,
                                            steps=int(self.config.intervention_steps),
                                            progress_bar=self.config.progress_bar)
        held_set = self._intervention_dataset(data["held"], target)
        tau = float(self.config.trigger.tau_int)
        sweep = None
        if bool(self.config.calibrate_threshold):
            rows = held_set.decision_mask
            sweep = threshold_sweep(predict_dataset(model, held_set)["trigger_prob"][rows], held_set.labels[rows])
            if sweep["best_threshold"] is not None and sweep["n_pos"] > 0:
                tau = float(sweep["best_threshold"])
        model.save(os.path.join(self.run_dir, "models", "intervention"),
                   extra={"trigger_threshold": tau, "threshold_source": "held_out_best_f1" if sweep else "tau_int",
                          "threshold_sweep": sweep["sweep"] if sweep else None,
                          "target_encoder": self._target_encoder_spec()})
        report = intervention_report(model, held_set, out_dir=self.report_dir, tau=tau)
        report = {k: v for k, v in report.items() if not isinstance(v, (list, dict))}
        self._write_json("intervention_summary.json", report)
        return report

    RANDOM_TARGET_DIM = 64

    def _target_encoder_spec(self) -> Dict[str, Any]:
        """What rebuilds the frozen target encoder elsewhere (an online run started from this
        folder, ``uniintervene_jax/online.py:make_target_encoder``)."""
        name = str(self.config.target_encoder)
        if name == "random":
            return {"name": "random", "dim": self.RANDOM_TARGET_DIM, "seed": int(self.config.seed)}
        return {"name": name}

    def _target_encoder(self):
        """The frozen target encoder named by ``config.target_encoder``.

        Raises:
          ValueError: unknown name.
        """
        from uniintervene_jax.intervention.target_encoders import (
            HFVisionTargetEncoder, ProxyValueTargetEncoder, RandomProjectionEncoder)

        name = str(self.config.target_encoder)
        if name == "proxy_value":
            return ProxyValueTargetEncoder(self.value_model())
        if name == "random":
            first = self.data()["train"][0]["observations"]
            return RandomProjectionEncoder({k: v.shape[1:] for k, v in first.items()}, self.RANDOM_TARGET_DIM,
                                           seed=int(self.config.seed))
        if name.startswith("hf:"):
            return HFVisionTargetEncoder(name[3:])
        raise ValueError(f"config.target_encoder must be 'proxy_value', 'random' or 'hf:PATH', got {name!r}")

    def _embed_fn(self):
        value = self.value_model()
        ids = self._instr()

        def embed(observations):
            return np.asarray(value.encode(observations, ids), np.float32)

        return embed

    def stage_memory(self):
        from uniintervene_jax.memory.audit import memory_audit
        from uniintervene_jax.memory.memory import MemoryConfig, RecoveryMemory
        from uniintervene_jax.memory.mining import mine_recovery_items, mining_preset

        data = self.data()
        table = self._labels()
        episodes = data["train"]
        curves = [table[e["metadata"]["episode_id"]][0] for e in episodes]  # raw V: one scale (mining.py)
        preset = mining_preset(self.config.memory.preset)

        def mine(config):
            return mine_recovery_items(episodes, curves, self._embed_fn(), config,
                                       episode_ids=list(range(len(episodes))), tasks=[self.config.task] * len(episodes))

        items, mined_delta = mine(preset), float(preset.delta)
        fallback = float(self.config.memory.get("fallback_delta", 0.0))
        if (items is None or not len(items)) and 0.0 < fallback < preset.delta:
            items, mined_delta = mine(dataclasses.replace(preset, delta=fallback)), fallback
        if items is None or not len(items):
            raise RuntimeError(f"no recovery segment qualified: no {preset.span}-step window of a successful "
                               f"episode's proxy value rises by {mined_delta} (memory.preset "
                               f"{self.config.memory.preset!r}, memory.fallback_delta {fallback})")
        memory = RecoveryMemory(MemoryConfig(index_type=self.config.memory.index_type), items)
        memory.save(os.path.join(self.run_dir, "memory"))
        # Audit queries: held-out states at the operator's takeover (where recovery is needed),
        # else the middle of failed held-out episodes.
        queries, values = self._takeover_states(data["held"], table)
        embed = self._embed_fn()
        q = embed({k: np.stack([o[k] for o in queries]) for k in queries[0]}) if queries else np.zeros((0, 1))
        audit = memory_audit(memory, q, np.asarray(values, np.float32), [self.config.task] * len(queries),
                             out_dir=self.report_dir)
        summary = {k: v for k, v in audit.items() if not isinstance(v, (list, dict))}
        summary.update({f"top1_similarity_{k}": v for k, v in audit["top1_similarity"].items()})
        summary.update({f"value_lift_{k}": v for k, v in audit["value_lift"].items()})
        audit = summary
        audit["mining_delta"] = mined_delta  # the preset's, or memory.fallback_delta when it mined nothing
        self._write_json("memory_summary.json", audit)
        return audit

    @staticmethod
    def _takeover_states(episodes, table):
        queries, values = [], []
        for e in episodes:
            first = e["metadata"].get("first_intervention_step")
            success = bool(e["metadata"].get("success"))
            if first is None and success:
                continue
            t = int(first) if first is not None else len(e["actions"]) // 2
            queries.append({k: v[t] for k, v in e["observations"].items()})
            values.append(float(table[e["metadata"]["episode_id"]][0][t]))
        return queries, values

    def stage_recovery(self):
        from uniintervene_jax.recovery.dataset import (anchors_like_online, current_observation_goals,
                                                       recovery_training_pairs)
        from uniintervene_jax.recovery.train import train_recovery_policy

        data = self.data()
        table = self._labels()

        goals = str(self.config.get("recovery_goals", "future"))
        if goals not in ("retrieved", "future"):
            raise ValueError(f"config.recovery_goals must be 'retrieved' or 'future', got {goals!r}")
        anchors = str(self.config.get("recovery_anchors", "all"))
        if anchors not in ("interventions", "all"):
            raise ValueError(f"config.recovery_anchors must be 'interventions' or 'all', got {anchors!r}")

        def pairs_for(episodes, retrieve=False):
            curves = [table[e["metadata"]["episode_id"]][0] for e in episodes]
            pairs = recovery_training_pairs(episodes, curves, horizon=int(self.config.recovery.horizon))
            if anchors == "interventions":
                pairs = anchors_like_online(pairs, episodes)
            if not bool(self.config.use_memory_goal):
                # w/o memory goal: trained on the input the closed loop (and the gate) gives it.
                return current_observation_goals(pairs), None
            if not retrieve or not len(pairs["actions"]):
                return pairs, None
            # The memory's episode ids are the indices into data["train"] (stage_memory), as
            # are the pairs' episode_index: retrieval skips the anchor's own episode.
            from uniintervene_jax.memory.memory import RecoveryMemory
            from uniintervene_jax.recovery.dataset import retrieved_goals

            items = RecoveryMemory.load(os.path.join(self.run_dir, "memory")).items
            anchor_values = np.array([curves[e][t] for e, t in zip(pairs["episode_index"], pairs["t"])], np.float64)
            return retrieved_goals(pairs, anchor_values, self.value_model(), self._instr(), self.config.task, items)

        train_pairs, retrieved_fraction = pairs_for(data["train"], retrieve=goals == "retrieved")
        policy, history = train_recovery_policy(
            train_pairs, self.config.recovery, num_steps=int(self.config.recovery_steps),
            batch_size=int(self.config.recovery_batch_size), seed=int(self.config.seed),
        )
        policy.save(os.path.join(self.run_dir, "models", "recovery"))
        held_pairs, _ = pairs_for(data["held"])  # hindsight goals: the held-out chunk error
        result: Dict[str, Any] = {"train_pairs": int(len(train_pairs["actions"])),
                                  "held_pairs": int(len(held_pairs["actions"])),
                                  "recovery_goals": goals if bool(self.config.use_memory_goal) else "current_observation",
                                  "recovery_anchors": anchors,
                                  "train_goals_retrieved": retrieved_fraction,
                                  "final_train_loss": history[-1].get("train/loss") if history else None}
        if len(held_pairs["actions"]):
            pred, info = policy.predict_chunk(held_pairs["observations"], held_pairs["goal_observations"],
                                              held_pairs["instructions"], return_info=True)
            result["recovery_chunk_mae"] = float(np.mean(np.abs(pred - held_pairs["actions"])))
            result["decode_failure_rate"] = float(np.mean(info["decode_failed"]))
            tok = policy.tokenizer
            if tok is not None:
                recon = [tok.decode(tok.encode(c), c.shape[0], c.shape[1]) for c in held_pairs["actions"]]
                result["token_reconstruction_mae"] = float(np.mean(np.abs(np.stack(recon) - held_pairs["actions"])))
        result.update(self._closed_loop(policy, data["held"], table))
        self._write_json("recovery.json", result)
        return result

    def _closed_loop(self, policy, episodes, table) -> Dict[str, Any]:
        from serl_ext.envs import get_privileged_state
        from serl_ext.loop import common
        from uniintervene_jax.memory.memory import RecoveryMemory

        c = self.config.closed_loop
        memory = RecoveryMemory.load(os.path.join(self.run_dir, "memory"))
        value = self.value_model()
        embed = self._embed_fn()
        ids = self._instr()
        train_config = self._train_config()
        use_goal = bool(self.config.use_memory_goal)
        candidates = [e for e in episodes if e["metadata"].get("first_intervention_step") is not None]
        candidates = candidates[: int(c.episodes)]
        outcomes: List[Dict[str, Any]] = []
        skipped = 0
        for e in candidates:
            k = int(e["metadata"]["first_intervention_step"])
            seed = int(e["metadata"]["seed"])
            env = common.make_env(train_config, seed, with_operator=False)
            try:
                obs, _ = env.reset(seed=seed)
                for a in e["actions"][:k]:
                    obs, *_ = env.step(a)
                if not np.allclose(obs["state"], e["observations"]["state"][k], atol=1e-4):
                    skipped += 1
                    continue
                v0 = float(value.values({kk: vv[None] for kk, vv in obs.items()}, ids)[0])
                best_v, success, reached, no_goal = v0, False, False, False
                for _ in range(int(c.max_chunks)):
                    v_now = float(value.values({kk: vv[None] for kk, vv in obs.items()}, ids)[0])
                    if use_goal:
                        goal = memory.retrieve(embed({kk: vv[None] for kk, vv in obs.items()})[0],
                                               self.config.task, v_now)
                        if goal is None:
                            no_goal = True
                            break
                        goal_obs, goal_state = goal.goal_observations, goal.goal_state
                    else:
                        goal_obs, goal_state = obs, None
                    chunk = policy.predict_chunk(obs, goal_obs, ids)[0]
                    done = False
                    for a in chunk:
                        obs, _, terminated, truncated, info = env.step(np.asarray(a, np.float32))
                        success = success or bool(info.get("success", False))
                        if goal_state is not None:
                            raw = get_privileged_state(env)
                            reached = reached or (
                                np.linalg.norm(raw[0:3] - goal_state[0:3]) < c.goal_radius
                                and np.linalg.norm(raw[4:7] - goal_state[4:7]) < c.goal_radius)
                        done = terminated or truncated
                        if done:
                            break
                    best_v = max(best_v, float(value.values({kk: vv[None] for kk, vv in obs.items()}, ids)[0]))
                    if done or success:
                        break
                outcomes.append({"value_start": v0, "value_best": best_v, "success": success,
                                 "goal_reached": reached, "no_goal": no_goal,
                                 "recovered": bool(success or reached or best_v >= v0 + c.value_gain)})
            finally:
                env.close()
        rate = float(np.mean([o["recovered"] for o in outcomes])) if outcomes else None
        return {
            "closed_loop_recovery_rate": rate,
            "closed_loop_attempts": len(outcomes),
            "closed_loop_skipped_replay_mismatch": skipped,
            "closed_loop_success_rate": float(np.mean([o["success"] for o in outcomes])) if outcomes else None,
            "closed_loop_goal_reached_rate": float(np.mean([o["goal_reached"] for o in outcomes])) if outcomes else None,
            "closed_loop_value_gain_mean": float(np.mean([o["value_best"] - o["value_start"] for o in outcomes])) if outcomes else None,
        }

    def stage_report(self) -> Dict[str, Any]:
        value = self._read_json("value_report.json")
        interv = self._read_json("intervention_summary.json")
        memory = self._read_json("memory_summary.json")
        recovery = self._read_json("recovery.json")
        manifest = self.data()["manifest"]
        metrics = {
            "task": self.config.task,
            "value_auroc": value.get("value_auroc"),
            "value_monotonic_fraction": value.get("value_monotonic_fraction"),
            "trigger_precision": interv.get("trigger_precision"),
            "trigger_recall": interv.get("trigger_recall"),
            "trigger_f1": interv.get("trigger_f1"),
            "trigger_threshold": interv.get("tau"),
            "trigger_auprc": interv.get("auprc"),
            "trigger_rate": interv.get("trigger_rate"),
            "head_type": str(self.config.intervention.head_type),
            "trigger_lead_steps": interv.get("trigger_lead_steps"),
            "false_trigger_rate_success": interv.get("false_trigger_rate_success"),
            "q_loss": interv.get("q_loss"),
            "memory_size": memory.get("memory_size"),
            "memory_top1_similarity_mean": memory.get("top1_similarity_mean"),
            "memory_value_lift_mean": memory.get("value_lift_mean"),
            "recovery_chunk_mae": recovery.get("recovery_chunk_mae"),
            "token_reconstruction_mae": recovery.get("token_reconstruction_mae"),
            "closed_loop_recovery_rate": recovery.get("closed_loop_recovery_rate"),
            "closed_loop_attempts": recovery.get("closed_loop_attempts"),
            "data": {k: manifest[k] for k in ("demos", "rollouts", "assisted") if k in manifest},
            "ablations": dict({k: bool(self.config.intervention[k]) for k in ("use_future", "use_value_cond")},
                              use_tvr=str(self.config.intervention.head_type) == "tvr_history",
                              use_memory_goal=bool(self.config.use_memory_goal)),
            "target_encoder": str(self.config.target_encoder),
            "tvr_form": "clipped" if self.config.labels.tvr_clip_negative else "signed",
            "mining_rule": self.config.labels.rule,
        }
        from serl_ext.loop.common import atomic_write_json

        atomic_write_json(os.path.join(self.run_dir, "metrics.json"), metrics)
        self._write_markdown(metrics, value, interv, memory, recovery)
        return metrics

    def _write_markdown(self, metrics, value, interv, memory, recovery) -> None:
        run_dir = os.path.abspath(self.run_dir)

        def fmt(v):
            if v is None:
                return "-"
            if isinstance(v, str) and os.path.isabs(v) and os.path.commonpath([v, run_dir]) == run_dir:
                return os.path.relpath(v, run_dir)  # plot paths: the report moves with its folder
            return f"{v:.3f}" if isinstance(v, float) else str(v)

        lines = [f"# UniIntervene offline report: {self.config.task}", ""]
        lines += ["| metric | value |", "|---|---|"]
        for k, v in metrics.items():
            if not isinstance(v, dict):
                lines.append(f"| {k} | {fmt(v)} |")
        for title, table in (("Proxy value", value), ("Intervention model (held-out)", interv),
                             ("Recovery memory audit", memory), ("Recovery policy", recovery)):
            lines += ["", f"## {title}", "", "| key | value |", "|---|---|"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in table.items() if not isinstance(v, (list, dict))]
        lines += ["", "## Plots", ""]
        for name in sorted(os.listdir(self.report_dir)):
            if name.endswith(".png"):
                lines.append(f"![{name}](report/{name})")
        with open(os.path.join(self.run_dir, "report.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


def run_pipeline(config: ml_collections.ConfigDict, run_dir: str, stages: Optional[Sequence[str]] = None):
    """Convenience wrapper: ``Pipeline(config, run_dir).run(stages or STAGES)``."""
    return Pipeline(config, run_dir).run(stages or STAGES)
