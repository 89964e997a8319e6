"""Nested config merging: the one helper behind every "defaults overridden by a partial
config" (agents, a method's models, configs read back from run folders)."""

from typing import Any, Dict, Mapping

UNKNOWN_FIELDS = ("error", "drop", "keep")


def merge_nested(defaults: Mapping[str, Any], overrides: Mapping[str, Any], unknown: str = "error",
                 name: str = "config") -> Dict[str, Any]:
    """``defaults`` with ``overrides`` laid over it, recursively for nested mappings.

    A field of ``overrides`` that is a mapping where the default is a mapping merges into it;
    any other value replaces the default. Neither input is changed.

    Args:
      defaults, overrides: plain nested dicts (``ConfigDict.to_dict()``).
      unknown: what a field of ``overrides`` that ``defaults`` lacks does: "error" (a typo
        guard), "drop" (e.g. SAC-only fields given to BC) or "keep".
      name: names the config in the error, e.g. "intervention config".
    Returns:
      a new nested dict.
    Raises:
      ValueError: ``unknown="error"`` and a field is unknown (``"unknown {name} field 'a.b'"``),
        or a bad ``unknown``.
      TypeError: ``overrides`` is not a mapping.
    """
    if unknown not in UNKNOWN_FIELDS:
        raise ValueError(f"unknown must be one of {UNKNOWN_FIELDS}, got {unknown!r}")
    if not isinstance(overrides, Mapping):
        raise TypeError(f"{name} overrides must be a mapping, got {type(overrides).__name__}")

    def merge(d: Mapping[str, Any], c: Mapping[str, Any], path: str) -> Dict[str, Any]:
        out = dict(d)
        for k, v in c.items():
            if k not in d:
                if unknown == "error":
                    raise ValueError(f"unknown {name} field {path + k!r}")
                if unknown == "keep":
                    out[k] = v
            elif isinstance(d[k], Mapping) and isinstance(v, Mapping):
                out[k] = merge(d[k], v, path + k + ".")
            else:
                out[k] = v
        return out

    return merge(defaults, overrides, "")
