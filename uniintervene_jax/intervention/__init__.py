"""UniIntervene intervention model (DESIGN.md section 4).

Backbone over (observation, instruction, candidate action) with a latent future head, twin
Q head, current-value head, value-history encoder and a risk head whose scalar is both the
temporal value-risk (TVR) regressor and the trigger logit.

Modules: ``model`` (networks), ``losses`` (pure loss functions), ``target_encoders``
(frozen future targets), ``train`` (config, model state, dataset, loop), ``report``
(trigger metrics, lead times, false triggers, timeline plot). Stagnation mining and TVR
targets live in ``mining`` / ``tvr`` (imported from there directly).
"""

from uniintervene_jax.intervention.losses import (
    intervention_loss,
    normalized_mse,
    sigmoid_focal_loss,
    smooth_l1,
)
from uniintervene_jax.intervention.model import (
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
from uniintervene_jax.intervention.train import (
    InterventionDataset,
    InterventionModel,
    build_dataset,
    get_default_config,
    history_windows,
    train_intervention_model,
)

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
    "sigmoid_focal_loss",
    "smooth_l1",
    "train_intervention_model",
    "trigger_metrics",
]
