"""UniIntervene: learned intervention gate, recovery memory and recovery policy."""

__version__ = "0.1.0"
