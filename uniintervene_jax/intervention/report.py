"""Offline evaluation of the intervention model: trigger quality, lead time, false triggers.

* :func:`trigger_metrics` -- precision / recall / F1 of per-step triggers against the mined
  stagnation labels (or any reference).
* :func:`lead_times` -- how many steps before the operator's takeover the model fired.
* :func:`false_trigger_rate` -- how often it fires in episodes that needed no help.
* :func:`intervention_report` -- all of the above plus the model's losses on a dataset, and
  a timeline plot of one episode (value, trigger probability, trigger, operator takeover).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from uniintervene_jax.gate import get_trigger_config, threshold_sweep, trigger_rule
from uniintervene_jax.intervention.losses import intervention_loss

DEFAULT_LEAD_WINDOW = 50


def _bool_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype != bool:
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)) or \
                not np.all(np.isin(a, (0, 1))):
            raise TypeError(f"{name} must be bool (or 0/1), got {a.dtype}")
        a = a.astype(bool)
    return a


def trigger_metrics(pred: Any, labels: Any) -> Tuple[float, float, float]:
    """Precision, recall and F1 of boolean triggers ``pred`` (N,) against ``labels`` (N,).

    ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2PR / (P + R)``.
    Zero-division conventions: with no predicted positives, precision is 1.0 if there are
    no positive labels either (nothing fired, nothing to find) and 0.0 otherwise; with no
    positive labels, recall is 1.0 if nothing fired and 0.0 otherwise; F1 is 0.0 when
    ``P + R == 0``. (So all-negative pred and labels give (1, 1, 1).)

    Raises: ValueError for different lengths / non-1-D input; TypeError for non-boolean values.
    """
    p = _bool_1d(pred, "pred")
    y = _bool_1d(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"pred and labels differ in length: {p.shape} vs {y.shape}")
    tp = int(np.sum(p & y))
    fp = int(np.sum(p & ~y))
    fn = int(np.sum(~p & y))
    if tp + fp == 0:
        precision = 1.0 if tp + fn == 0 else 0.0
    else:
        precision = tp / (tp + fp)
    if tp + fn == 0:
        recall = 1.0 if tp + fp == 0 else 0.0
    else:
        recall = tp / (tp + fn)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return float(precision), float(recall), float(f1)


def lead_times(triggers: Sequence[Any], takeover_steps: Sequence[Optional[int]],
               window: int = DEFAULT_LEAD_WINDOW) -> List[Optional[int]]:
    """Steps by which the model's trigger preceded each episode's operator takeover.

    For episode i with takeover at step ``s`` (the first step the operator acted), the lead
    time is ``s - f`` where ``f`` is the first step in ``[max(0, s - window), s]`` at which
    ``triggers[i]`` is True (0 = fired at the takeover step itself). It is ``None`` when the
    model did not fire in that window (fired only later, or never, or only earlier than the
    window, which counts as unrelated) or when the episode had no takeover (``s`` None).

    Args:
      triggers: per episode a bool (T_i,) array. takeover_steps: per episode int or None.
      window: look-back in steps (>= 0; default 50, about the simulated operator's stall
        window W of 40-120 steps, DESIGN section 6).
    Raises: ValueError for mismatched lengths, a takeover outside [0, T_i), window < 0.
    """
    if len(triggers) != len(takeover_steps):
        raise ValueError(f"{len(triggers)} trigger sequences for {len(takeover_steps)} takeover steps")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    out: List[Optional[int]] = []
    for i, (trig, s) in enumerate(zip(triggers, takeover_steps)):
        trig = _bool_1d(trig, f"triggers[{i}]")
        if s is None:
            out.append(None)
            continue
        s = int(s)
        if not 0 <= s < len(trig):
            raise ValueError(f"takeover step {s} outside episode {i} of length {len(trig)}")
        lo = max(0, s - int(window))
        fired = np.nonzero(trig[lo:s + 1])[0]
        out.append(None if fired.size == 0 else int(s - (lo + fired[0])))
    return out


def false_trigger_rate(triggers: Sequence[Any]) -> Tuple[float, float]:
    """False triggers in episodes that needed no help (pass only such episodes' triggers).

    Returns ``(episode_rate, step_rate)``: the fraction of episodes with at least one
    trigger, and the fraction of all their steps with a trigger.
    Raises ValueError for no episodes or an empty episode.
    """
    if len(triggers) == 0:
        raise ValueError("false_trigger_rate: no episodes")
    seqs = [_bool_1d(t, f"triggers[{i}]") for i, t in enumerate(triggers)]
    if any(len(s) == 0 for s in seqs):
        raise ValueError("false_trigger_rate: empty episode")
    ep_rate = float(np.mean([s.any() for s in seqs]))
    step_rate = float(np.sum([s.sum() for s in seqs]) / np.sum([len(s) for s in seqs]))
    return ep_rate, step_rate


def predict_dataset(model: Any, dataset: Any, batch_size: int = 1024) -> Dict[str, np.ndarray]:
    """``model.predict`` over every row of ``dataset`` in chunks; concatenated numpy outputs."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parts: Dict[str, List[np.ndarray]] = {}
    for s in range(0, len(dataset), batch_size):
        idx = np.arange(s, min(s + batch_size, len(dataset)))
        out = model.predict({k: v[idx] for k, v in dataset.observations.items()}, dataset.instr_ids[idx],
                            dataset.actions[idx], dataset.value_history[idx])
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _episodes(dataset: Any) -> List[np.ndarray]:
    """Row indices of each episode, ordered by t."""
    out = []
    for e in np.unique(dataset.episode_index):
        rows = np.nonzero(dataset.episode_index == e)[0]
        out.append(rows[np.argsort(dataset.t[rows], kind="stable")])
    return out


def _plot_timeline(path: str, t: np.ndarray, values: np.ndarray, prob: np.ndarray, trig: np.ndarray,
                   labels: np.ndarray, human: np.ndarray, tau: float, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for i in np.nonzero(human)[0]:
        ax.axvspan(t[i] - 0.5, t[i] + 0.5, color="tab:red", alpha=0.15, lw=0)
    for i in np.nonzero(labels)[0]:
        ax.axvspan(t[i] - 0.5, t[i] + 0.5, ymin=0.0, ymax=0.05, color="tab:gray", alpha=0.6, lw=0)
    ax.plot(t, values, color="tab:blue", label="proxy value V_t")
    ax.plot(t, prob, color="tab:orange", label="trigger prob sigmoid(risk)")
    ax.axhline(tau, color="tab:orange", ls=":", lw=1, label=f"tau_int = {tau}")
    if trig.any():
        ax.scatter(t[trig], np.full(trig.sum(), 1.03), marker="v", color="tab:orange", s=12, label="trigger")
    if human.any():
        ax.axvline(t[np.argmax(human)], color="tab:red", lw=1.5, label="operator takeover (shaded: human steps)")
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("step t")
    ax.set_title(title + "  (gray ticks: stagnation labels)")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def intervention_report(model: Any, dataset: Any, out_dir: Optional[str] = None,
                        lead_window: int = DEFAULT_LEAD_WINDOW, batch_size: int = 1024,
                        example_episode: Optional[int] = None, tau: Optional[float] = None) -> Dict[str, Any]:
    """Evaluates ``model`` (an ``InterventionModel``) on ``dataset`` (an ``InterventionDataset``,
    ideally held-out episodes). A decision row (``dataset.decision_mask``: t >= K, where the
    gate decides) fires by the gate's rule (:func:`uniintervene_jax.gate.trigger_rule`) with
    ``tau`` (None: ``get_trigger_config().tau_int``); the other rows never fire. Precision,
    recall, F1, label and trigger rates are over the decision rows; so is
    :func:`uniintervene_jax.gate.threshold_sweep` (the best-F1 threshold, official
    ``threshold_sweep_metrics``).

    Returned dict (floats, or None when undefined):
      * ``q_loss`` (sum of both Q heads' smooth-L1 to V(t+1), as in training; None without
        the value heads), ``value_loss``, ``future_loss``, ``risk_tvr_loss``, ``focal_loss``,
        ``loss`` -- the training terms on the whole dataset;
      * ``trigger_precision``, ``trigger_recall``, ``trigger_f1`` -- :func:`trigger_metrics`
        of the triggers against the dataset's stagnation labels;
      * ``trigger_lead_steps`` -- median of :func:`lead_times` over episodes with a
        takeover (first ``interventions`` step) where the model fired within
        ``lead_window``; ``takeover_episodes``, ``takeovers_anticipated`` (fraction with a
        lead time);
      * ``false_trigger_rate_success`` / ``false_trigger_step_rate_success`` --
        :func:`false_trigger_rate` over successful episodes without any operator step
        (None when the dataset has no success information or no such episode);
      * ``num_samples``, ``num_decisions``, ``num_episodes``, ``label_rate``, ``trigger_rate``,
        ``tau``;
      * ``best_threshold``, ``best_f1``, ``precision_at_best``, ``recall_at_best``,
        ``trigger_rate_at_best``, ``auprc`` and ``threshold_sweep`` (the list of sweep points),
        from :func:`~uniintervene_jax.gate.threshold_sweep`;
      * ``timeline_plot``: path of the plot when ``out_dir`` is given.

    With ``out_dir`` it also writes ``intervention_report.json`` and
    ``timeline_episode<e>.png`` for ``example_episode`` (an ``episode_index`` value; default
    the first episode with a takeover, else the first).
    Raises: ValueError for an empty dataset or an unknown ``example_episode``.
    """
    if len(dataset) == 0:
        raise ValueError("intervention_report: empty dataset")
    cfg = model.config
    tau = float(get_trigger_config().tau_int if tau is None else tau)
    out = predict_dataset(model, dataset, batch_size)
    batch = {"values_now": dataset.values_now, "values_next": dataset.values_next, "tvr": dataset.tvr,
             "labels": dataset.labels, "target_latents_next": dataset.target_latents_next}
    _, info = intervention_loss(out, batch, cfg)
    info = {k: float(v) for k, v in info.items()}
    decide = dataset.decision_mask if dataset.decision_mask.any() else np.ones(len(dataset), bool)
    trig = trigger_rule(out, tau) & decide
    precision, recall, f1 = trigger_metrics(trig[decide], dataset.labels[decide])
    sweep = threshold_sweep(out["trigger_prob"][decide], dataset.labels[decide])

    episodes = _episodes(dataset)
    trig_eps = [trig[rows] for rows in episodes]
    takeovers = []
    for rows in episodes:
        human = dataset.interventions[rows]
        takeovers.append(int(np.argmax(human)) if human.any() else None)
    leads = lead_times(trig_eps, takeovers, lead_window)
    with_takeover = [ld for ld, s in zip(leads, takeovers) if s is not None]
    found = [ld for ld in with_takeover if ld is not None]

    fts = fts_step = None
    if dataset.episode_success is not None:
        clean = [trig[rows] for rows in episodes
                 if dataset.episode_success[rows[0]] and not dataset.interventions[rows].any()]
        if clean:
            fts, fts_step = false_trigger_rate(clean)

    report: Dict[str, Any] = {
        "num_samples": int(len(dataset)),
        "num_decisions": int(decide.sum()),
        "num_episodes": int(len(episodes)),
        "label_rate": float(np.mean(dataset.labels[decide])),
        "trigger_rate": float(np.mean(trig[decide])),
        "tau": tau,
        "head_type": str(cfg.head_type),
        "loss": info["loss"],
        "q_loss": info.get("q_loss"),
        "value_loss": info.get("value_loss"),
        "future_loss": info.get("future_loss"),
        "risk_tvr_loss": info.get("risk_tvr_loss"),
        "focal_loss": info["focal_loss"],
        "trigger_precision": precision,
        "trigger_recall": recall,
        "trigger_f1": f1,
        "trigger_lead_steps": float(np.median(found)) if found else None,
        "lead_window": int(lead_window),
        "takeover_episodes": len(with_takeover),
        "takeovers_anticipated": (len(found) / len(with_takeover)) if with_takeover else None,
        "false_trigger_rate_success": fts,
        "false_trigger_step_rate_success": fts_step,
        **{k: sweep[k] for k in ("best_threshold", "best_f1", "precision_at_best", "recall_at_best",
                                 "trigger_rate_at_best", "auprc")},
        "threshold_sweep": sweep["sweep"],
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        ep_ids = [int(dataset.episode_index[rows[0]]) for rows in episodes]
        if example_episode is None:
            pick = next((j for j, s in enumerate(takeovers) if s is not None), 0)
        elif int(example_episode) in ep_ids:
            pick = ep_ids.index(int(example_episode))
        else:
            raise ValueError(f"example_episode {example_episode} not in the dataset's episodes")
        rows = episodes[pick]
        path = os.path.join(out_dir, f"timeline_episode{ep_ids[pick]}.png")
        _plot_timeline(path, dataset.t[rows], dataset.values_now[rows], out["trigger_prob"][rows], trig[rows],
                       dataset.labels[rows], dataset.interventions[rows], tau,
                       f"episode {ep_ids[pick]}")
        report["timeline_plot"] = path
        with open(os.path.join(out_dir, "intervention_report.json"), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    return report
