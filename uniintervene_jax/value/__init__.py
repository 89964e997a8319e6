"""Proxy value function ``V(o, l)`` in [0, 1] (DESIGN.md section 4).

Modules: ``network`` (:class:`ProxyValueNet`, twin sigmoid heads), ``losses``
(:func:`proxy_value_loss`), ``model`` (:class:`ProxyValue`: update, inference, save/load;
:func:`value_curves`), ``dataset`` (:class:`ValueDataset`), ``config`` (defaults, resolve),
``train`` (:func:`train_proxy_value`), ``report`` (held-out checks). Its labels (NTTG progress,
Monte-Carlo returns, episode success) live in :mod:`uniintervene_jax.labels` and are
re-exported here.
"""

from uniintervene_jax.labels import episode_success, monte_carlo_returns, nttg_progress
from uniintervene_jax.value.config import get_default_config, resolve_config
from uniintervene_jax.value.dataset import ValueDataset
from uniintervene_jax.value.losses import proxy_value_loss
from uniintervene_jax.value.model import ProxyValue, value_curves
from uniintervene_jax.value.network import ProxyValueNet
from uniintervene_jax.value.report import auroc, value_report
from uniintervene_jax.value.train import train_proxy_value

__all__ = [
    "ProxyValue",
    "ProxyValueNet",
    "ValueDataset",
    "auroc",
    "episode_success",
    "get_default_config",
    "monte_carlo_returns",
    "nttg_progress",
    "proxy_value_loss",
    "resolve_config",
    "train_proxy_value",
    "value_curves",
    "value_report",
]
