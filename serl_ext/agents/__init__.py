"""Agents: SAC / RLPD, the HiL-SERL hybrid (SAC + DQN gripper) agent, behaviour cloning."""

from serl_ext.agents.bc import BCAgent
from serl_ext.agents.sac import SACAgent, compute_td_target, temperature_loss
from serl_ext.agents.sac import get_default_config as get_sac_config
from serl_ext.agents.sac_hybrid import SACHybridAgent, compute_grasp_target
from serl_ext.agents.sac_hybrid import get_default_config as get_hybrid_config
from serl_ext.agents.bc import get_default_config as get_bc_config

__all__ = [
    "BCAgent",
    "SACAgent",
    "SACHybridAgent",
    "compute_grasp_target",
    "compute_td_target",
    "get_bc_config",
    "get_hybrid_config",
    "get_sac_config",
    "temperature_loss",
]
