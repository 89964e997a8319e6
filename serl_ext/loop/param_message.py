"""The learner -> actor parameter message: one schema, built and checked here for both sides.

A message is a plain nested dict (msgpack-able by ``serl_ext.transport``)::

    {
      "schema_version": 1,            # SCHEMA_VERSION; any other value is refused
      "version": int >= 0,            # increases with every publish
      "learner_step": int >= 0,       # the actor's data/update throttle reads it
      "params": {...},                # the agent's policy_params(): nested dict of float arrays
      "parts": {                      # what a method adds (serl_ext/loop/extension.py), by name
        NAME: {"version": int >= 0, ...},   # e.g. a method's models, memory, threshold
      },
    }

The learner builds it with :func:`build_message`; the actor's transport thread hands it to
:func:`check_message`, which refuses it whole (``MessageError``, nothing applied) when it is
not a dict, has another schema version, lacks a field, carries a non-integer version or step,
a tree that does not match the actor's policy parameters (paths, shapes, dtypes), a NaN or inf
anywhere (agent params or any part), or a part that no one on the actor takes.
"""

from typing import Any, Dict, Iterable, Mapping, NamedTuple, Optional

import numpy as np

SCHEMA_VERSION = 1
_FIELDS = ("schema_version", "version", "learner_step", "params", "parts")


class MessageError(ValueError):
    """A parameter message that does not follow the schema; the text says what is wrong."""


class ParameterMessage(NamedTuple):
    """A checked message. ``parts`` maps part name -> part dict (each with an int ``version``)."""

    version: int
    learner_step: int
    params: Dict[str, Any]
    parts: Dict[str, Dict[str, Any]]


def build_message(version: int, learner_step: int, params: Mapping[str, Any],
                  parts: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """The message dict for the transport.

    Args:
      version: publish counter (int >= 0).
      learner_step: learner steps done (int >= 0).
      params: the agent's ``policy_params()`` (nested dict of numpy arrays).
      parts: optional ``{name: part}``; each part a dict with an int ``version`` (>= 0).
    Raises:
      MessageError: bad fields or versions (finiteness is left to the receiver, which refuses
        a NaN message: the learner keeps running and the actor keeps its last parameters).
    """
    message = {"schema_version": SCHEMA_VERSION, "version": int(version), "learner_step": int(learner_step),
               "params": dict(params), "parts": {str(k): dict(v) for k, v in (parts or {}).items()}}
    check_message(message, check_finite=False)
    return message


def check_message(message: Any, params_template: Optional[Mapping[str, Any]] = None,
                  accepted_parts: Optional[Iterable[str]] = None, check_finite: bool = True) -> ParameterMessage:
    """Validates a received message without changing anything.

    Args:
      message: what arrived on the broadcast socket.
      params_template: the actor's own ``policy_params()``; when given, ``params`` must have
        exactly its paths, shapes and dtypes.
      accepted_parts: part names the receiver takes; a part outside them is refused (None:
        any name).
      check_finite: refuse NaN / inf in any float array (agent params and parts).
    Returns:
      the :class:`ParameterMessage`.
    Raises:
      MessageError: with the reason (see the module docstring).
    """
    if not isinstance(message, Mapping):
        raise MessageError(f"parameter message must be a dict, got {type(message).__name__}")
    missing = [k for k in _FIELDS if k not in message]
    if missing:
        raise MessageError(f"parameter message misses {missing}")
    if message["schema_version"] != SCHEMA_VERSION:
        raise MessageError(f"parameter message has schema_version {message['schema_version']!r}, "
                           f"this side reads {SCHEMA_VERSION}")
    version = _count(message["version"], "version")
    learner_step = _count(message["learner_step"], "learner_step")
    params = message["params"]
    if not isinstance(params, Mapping) or not params:
        raise MessageError("parameter message 'params' must be a non-empty nested dict of arrays")
    if check_finite:
        _check_finite(params, "params")
    if params_template is not None:
        from serl_ext.networks.params import check_params_match

        try:
            check_params_match(params_template, params, name="params")
        except ValueError as e:
            raise MessageError(str(e)) from None
    parts = message["parts"]
    if not isinstance(parts, Mapping):
        raise MessageError(f"parameter message 'parts' must be a dict, got {type(parts).__name__}")
    accepted = None if accepted_parts is None else set(accepted_parts)
    for name, part in parts.items():
        if accepted is not None and name not in accepted:
            raise MessageError(f"parameter message carries part {name!r} that nothing on this side takes "
                               f"(accepted: {sorted(accepted)})")
        if not isinstance(part, Mapping) or "version" not in part:
            raise MessageError(f"part {name!r} must be a dict with a 'version'")
        _count(part["version"], f"parts/{name}/version")
        if check_finite:
            _check_finite(part, f"parts/{name}")
    return ParameterMessage(version, learner_step, dict(params), {k: dict(v) for k, v in parts.items()})


def _count(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise MessageError(f"parameter message {name} must be an int >= 0, got {value!r}")
    return int(value)


def _check_finite(tree: Any, path: str) -> None:
    """Raises MessageError at the first float array (or float) holding NaN or inf."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            _check_finite(v, f"{path}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _check_finite(v, f"{path}/{i}")
    elif isinstance(tree, (np.ndarray, np.generic, float)):
        arr = np.asarray(tree)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise MessageError(f"{path} contains NaN or inf")
