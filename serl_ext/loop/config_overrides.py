"""``--config.FIELD=VALUE`` flags for the stand-alone launchers (collect_demos.py,
record_demos.py), which build the training config with ``configs/train.py:get_config`` but
do not use ml_collections' ``config_flags``."""

import ast
from typing import Iterable, List

import ml_collections

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def split_config_flags(argv: Iterable[str]) -> List[str]:
    """``--config.FIELD=VALUE`` -> ``--config=FIELD=VALUE`` (absl has no dotted flags here)."""
    return [("--config=" + a[len("--config."):]) if a.startswith("--config.") else a for a in argv]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Sets ``FIELD=VALUE`` overrides on ``config`` in place and returns it.

    The value is read as a Python literal (``40``, ``0.05``, ``(0.3, -0.2, 0.1)``), else kept as a
    string (``10.0.0.3``); a bool field also takes ``true`` / ``false`` (any case), as
    ``config_flags`` does; an int given to a float field becomes a float.

    Raises:
      SystemExit: a malformed override, an unknown field, or a bool field given another value.
    """
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--config.{item}: expected --config.FIELD=VALUE")
        path, text = item.split("=", 1)
        *parents, leaf = path.split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
            current = node[leaf]
        except (KeyError, AttributeError, TypeError):
            raise SystemExit(f"--config.{path}: no such config field") from None
        if isinstance(current, bool):
            if text.strip().lower() not in _TRUE + _FALSE:
                raise SystemExit(f"--config.{path}={text}: expected True or False")
            value = text.strip().lower() in _TRUE
        elif isinstance(current, str):
            value = text
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        with node.ignore_type():
            node[leaf] = value
    return config
