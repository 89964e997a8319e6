"""Networks: MLP, ensembles, actor/critic heads, observation encoders, augmentation."""

from serl_ext.networks.augment import augment_observations, random_crop
from serl_ext.networks.encoders import (
    ENCODER_TYPES,
    ImageEncoder,
    ObservationEncoder,
    ResNet10,
    SmallCNN,
    SpatialLearnedEmbeddings,
)
from serl_ext.networks.ensemble import Ensemble, subsample_ensemble, subsample_indices
from serl_ext.networks.heads import (
    Critic,
    DiscreteCritic,
    StateCritic,
    TanhGaussianPolicy,
    tanh_gaussian_log_prob,
    tanh_gaussian_mode,
    tanh_gaussian_sample,
)
from serl_ext.networks.mlp import MLP
from serl_ext.networks.params import (
    check_params_match,
    flatten_params,
    load_params,
    load_pretrained_encoder,
    save_params,
    to_numpy_tree,
)
from serl_ext.networks.pretrained import load_encoder_weights, read_encoder_meta, save_encoder_weights

__all__ = [
    "ENCODER_TYPES",
    "Critic",
    "DiscreteCritic",
    "Ensemble",
    "ImageEncoder",
    "MLP",
    "ObservationEncoder",
    "ResNet10",
    "SmallCNN",
    "SpatialLearnedEmbeddings",
    "StateCritic",
    "TanhGaussianPolicy",
    "augment_observations",
    "check_params_match",
    "flatten_params",
    "load_params",
    "load_encoder_weights",
    "load_pretrained_encoder",
    "random_crop",
    "read_encoder_meta",
    "save_encoder_weights",
    "save_params",
    "subsample_ensemble",
    "subsample_indices",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_mode",
    "tanh_gaussian_sample",
    "to_numpy_tree",
]
