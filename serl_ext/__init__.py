"""HiL-SERL-style infrastructure in JAX: agents, networks, data, transport, envs, loops."""

__version__ = "0.1.0"
