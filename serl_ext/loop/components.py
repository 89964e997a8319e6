"""Builds what an algorithm adds to the loop from ``config.components`` (set by the algorithm
registry, ``configs/algorithms.py``), so the infrastructure never imports a method.

``config.components`` holds import strings ``"package.module:attribute"`` ("" for none):

  gate: ``factory(config, obs_spec, action_dim, run_dir) -> Gate or None`` (the actor's gate,
    ``serl_ext/loop/gate.py``; None or "" -> :class:`~serl_ext.loop.gate.PassThroughGate`).
  learner_extension: ``factory(config, obs_spec, action_dim, run_dir, resumed) ->
    LearnerExtension or None`` (``serl_ext/loop/extension.py``).

A factory may also be registered in-process with :func:`register` and named by its key (tests,
notebooks); import strings keep the run folder's config self-contained.
"""

import importlib
from typing import Any, Callable, Dict, Optional

_REGISTERED: Dict[str, Callable[..., Any]] = {}


def register(name: str, factory: Callable[..., Any]) -> None:
    """Makes ``factory`` reachable as ``config.components.* = name`` in this process.

    Raises:
      ValueError: ``name`` contains ':' (reserved for import strings) or is empty.
    """
    if not name or ":" in name:
        raise ValueError(f"registered component names must be non-empty and without ':', got {name!r}")
    _REGISTERED[name] = factory


def resolve(spec: str) -> Optional[Callable[..., Any]]:
    """The callable named by ``spec`` (None for "").

    Raises:
      ValueError: ``spec`` is neither a registered name nor ``"module:attribute"``, or the
        module or attribute does not exist (the message names it).
    """
    if not spec:
        return None
    if spec in _REGISTERED:
        return _REGISTERED[spec]
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"component {spec!r} is neither registered nor 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"component {spec!r}: cannot import {module_name!r} ({e})") from e
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"component {spec!r}: {module_name!r} has no {attribute!r}") from None


def _spec(config, field: str) -> str:
    components = config.get("components")
    return "" if components is None else str(components.get(field) or "")


def make_gate(config, obs_spec, action_dim: int, run_dir: Optional[str]):
    """The actor's gate of ``config.components.gate`` (a PassThroughGate when none).

    Args:
      config: the composed training config. obs_spec: ``{key: (shape, dtype)}``.
      action_dim: A. run_dir: the run folder (gate files, e.g. a timeline), or None.
    Raises:
      ValueError: a bad import string (:func:`resolve`) or what the factory raises.
    """
    from serl_ext.loop.gate import PassThroughGate

    factory = resolve(_spec(config, "gate"))
    gate = factory(config, obs_spec, action_dim, run_dir) if factory is not None else None
    return gate if gate is not None else PassThroughGate()


def make_learner_extension(config, obs_spec, action_dim: int, run_dir: str, resumed: bool):
    """The learner extension of ``config.components.learner_extension``, or None.

    Args:
      resumed: the learner restored a checkpoint (the extension should restore its own state
        from ``{run_dir}/{name}`` then, else start fresh).
    Raises:
      ValueError: a bad import string (:func:`resolve`) or what the factory raises.
    """
    factory = resolve(_spec(config, "learner_extension"))
    return None if factory is None else factory(config, obs_spec, action_dim, run_dir, resumed)
