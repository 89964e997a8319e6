"""Proxy value function ``V(o, l)`` in [0, 1] and its labels (DESIGN.md section 4)."""

from uniintervene_jax.value.labels import episode_success, monte_carlo_returns, nttg_progress
from uniintervene_jax.value.model import ProxyValueNet
from uniintervene_jax.value.report import auroc, value_curves, value_report
from uniintervene_jax.value.train import (
    ProxyValue,
    ValueDataset,
    get_default_config,
    proxy_value_loss,
    resolve_config,
    train_proxy_value,
)

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
