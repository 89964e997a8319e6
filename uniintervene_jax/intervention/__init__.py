"""UniIntervene intervention model (DESIGN.md section 4).

Backbone over (observation, instruction, candidate action) with a latent future head, twin
Q head, current-value head, value-history encoder and a risk head whose scalar is both the
temporal value-risk (TVR) regressor and the trigger logit.

Modules: ``network`` (backbones and heads), ``losses`` (pure loss functions), ``model``
(:class:`InterventionModel`: update, predict, save/load), ``dataset``
(:class:`InterventionDataset`, :func:`build_dataset`), ``config`` (defaults, resolve),
``train`` (the loop), ``target_encoders`` (frozen future targets), ``report`` (trigger
metrics, lead times, false triggers, timeline plot). Its labels (stagnation mining, TVR
targets, value history) live in :mod:`uniintervene_jax.labels`; the trigger rule and tau in
:mod:`uniintervene_jax.gate`.
"""

from uniintervene_jax.intervention.config import get_default_config, resolve_config
from uniintervene_jax.intervention.dataset import InterventionDataset, build_dataset
from uniintervene_jax.intervention.losses import (
    intervention_loss,
    normalized_mse,
    sigmoid_focal_loss,
    smooth_l1,
)
from uniintervene_jax.intervention.model import InterventionModel
from uniintervene_jax.intervention.network import (
    CNNBackbone,
    InterventionNet,
    MLPBackbone,
)
from uniintervene_jax.intervention.report import (
    false_trigger_rate,
    intervention_report,
    lead_times,
    trigger_metrics,
)
from uniintervene_jax.intervention.target_encoders import (
    HFVisionTargetEncoder,
    ProxyValueTargetEncoder,
    RandomProjectionEncoder,
    TargetEncoder,
)
from uniintervene_jax.intervention.train import train_intervention_model
# The name this package has always exported for the value-history rows (one implementation).
from uniintervene_jax.labels import value_history as history_windows

__all__ = [
    "CNNBackbone",
    "HFVisionTargetEncoder",
    "InterventionDataset",
    "InterventionModel",
    "InterventionNet",
    "MLPBackbone",
    "ProxyValueTargetEncoder",
    "RandomProjectionEncoder",
    "TargetEncoder",
    "build_dataset",
    "false_trigger_rate",
    "get_default_config",
    "history_windows",
    "intervention_loss",
    "intervention_report",
    "lead_times",
    "normalized_mse",
    "resolve_config",
    "sigmoid_focal_loss",
    "smooth_l1",
    "train_intervention_model",
    "trigger_metrics",
]
