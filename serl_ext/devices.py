"""Which device a process computes on: ``auto`` (an accelerator when jax sees one, else the
CPU), ``cpu`` or ``gpu`` (docs/gpu_and_devices.md).

The learner (the GPU box of DESIGN section 1) defaults to ``auto``; the actor and the
evaluation default to ``cpu`` (the actor runs on the robot PC and is latency-bound: a policy
step is far too small for an accelerator to pay off). The choice comes, first to last, from
``--device`` of ``serl_ext.loop.main``, the environment variable ``{ROLE}_DEVICE``
(``LEARNER_DEVICE``, ``ACTOR_DEVICE``, ``EVAL_DEVICE``), the role's default. An explicit
``JAX_PLATFORMS`` in the environment (jax's own variable) is left alone: it limits what jax
sees, and ``gpu`` then fails when it hides the GPU.

``cpu`` is applied by setting jax's ``jax_platforms`` option to ``"cpu"`` before any
backend starts (so no accelerator memory is taken); ``auto`` and ``gpu`` let jax start every
backend it has (CUDA or ROCm) and pick its first accelerator, which is also jax's default
device, so arrays land there without further placement.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

DEVICE_CHOICES = ("auto", "cpu", "gpu")
ROLE_DEFAULTS = {"learner": "auto", "actor": "cpu", "eval": "cpu"}
# What `pip install` gives a CUDA 12 box a jax that sees its GPU (setup.py's extra).
CUDA_HINT = "pip install -e '.[cuda]' (jax[cuda12]; docs/gpu_and_devices.md)"


def requested_device(role: str, flag_value: str = "", environ: Optional[dict] = None) -> str:
    """The device choice of ``role``: ``flag_value`` when not empty, else ``{ROLE}_DEVICE``
    from ``environ`` (default ``os.environ``) when set and not empty, else
    ``ROLE_DEFAULTS[role]``.

    Returns one of :data:`DEVICE_CHOICES` (lower-cased).
    Raises ValueError for an unknown role or choice (naming where the choice came from).
    """
    if role not in ROLE_DEFAULTS:
        raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLE_DEFAULTS)}")
    environ = os.environ if environ is None else environ
    var = f"{role.upper()}_DEVICE"
    if flag_value:
        choice, source = flag_value, "--device"
    elif environ.get(var):
        choice, source = environ[var], var
    else:
        choice, source = ROLE_DEFAULTS[role], f"the {role} default"
    choice = choice.strip().lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"{source}={choice!r}: the device must be one of {DEVICE_CHOICES}")
    return choice


def configure_platforms(choice: str, environ: Optional[dict] = None) -> Optional[str]:
    """Applies ``choice`` to jax's platform option before any backend starts.

    ``cpu`` sets ``jax_platforms="cpu"``; ``auto`` and ``gpu`` leave jax to start every
    backend it has. Nothing is changed when ``JAX_PLATFORMS`` is set in ``environ`` (default
    ``os.environ``) or when jax's backends have already started (then jax keeps what it has;
    :func:`select_device` still checks the result).

    Returns the ``jax_platforms`` value set, or None when nothing was set.
    Raises ValueError for an unknown choice.
    """
    import jax

    if choice not in DEVICE_CHOICES:
        raise ValueError(f"the device must be one of {DEVICE_CHOICES}, got {choice!r}")
    environ = os.environ if environ is None else environ
    if choice != "cpu" or environ.get("JAX_PLATFORMS") or _backends_started():
        return None
    jax.config.update("jax_platforms", "cpu")
    return "cpu"


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a jax without the helper: assume they have not
        return False


def select_device(choice: str, devices: Optional[Sequence] = None):
    """The device ``choice`` resolves to among ``devices`` (default ``jax.devices()``, jax's
    default backend first).

    ``auto``: the first device whose ``platform`` is not ``"cpu"`` (GPU, TPU), else the first
    CPU device; ``cpu``: the first CPU device (``jax.devices("cpu")`` when ``devices`` holds
    none); ``gpu``: the first device with ``platform == "gpu"``.

    Returns a ``jax.Device`` (or whatever ``devices`` holds).
    Raises ValueError for an unknown choice; RuntimeError when ``gpu`` is asked for and no GPU
    is visible (the message says what jax sees and how to install CUDA support).
    """
    import jax

    if choice not in DEVICE_CHOICES:
        raise ValueError(f"the device must be one of {DEVICE_CHOICES}, got {choice!r}")
    devices = list(jax.devices() if devices is None else devices)
    cpus = [d for d in devices if d.platform == "cpu"]
    if choice == "cpu":
        return cpus[0] if cpus else jax.devices("cpu")[0]
    if choice == "gpu":
        gpus = [d for d in devices if d.platform == "gpu"]
        if not gpus:
            seen = ", ".join(sorted({d.platform for d in devices})) or "nothing"
            limit = os.environ.get("JAX_PLATFORMS")
            why = f" (JAX_PLATFORMS={limit!r} limits what jax starts)" if limit else ""
            raise RuntimeError(f"device 'gpu' asked for, but jax sees only {seen}{why}; for CUDA 12: {CUDA_HINT}")
        return gpus[0]
    accelerators = [d for d in devices if d.platform != "cpu"]
    return accelerators[0] if accelerators else cpus[0]


def describe_device(device, devices: Optional[Sequence] = None) -> str:
    """One line naming ``device``: platform, id, kind, and how many devices of its platform
    ``devices`` (default ``jax.devices(device.platform)``) holds, e.g.
    ``"gpu:0 (NVIDIA H200; 1 gpu device visible)"``."""
    import jax

    devices = list(jax.devices(device.platform) if devices is None else devices)
    same = sum(1 for d in devices if d.platform == device.platform)
    kind = getattr(device, "device_kind", "") or device.platform
    plural = "" if same == 1 else "s"
    return f"{device.platform}:{device.id} ({kind}; {same} {device.platform} device{plural} visible)"


def setup_device(role: str, flag_value: str = ""):
    """Configures, selects and reports the device of a process (call it before any jax
    computation): :func:`requested_device`, :func:`configure_platforms`,
    :func:`select_device`; prints ``[ROLE] device: ...`` once.

    Returns the selected ``jax.Device``; also makes it jax's default device when it is not
    already (a ``cpu`` choice under a ``JAX_PLATFORMS`` that starts an accelerator too).
    Raises what those functions raise (ValueError, RuntimeError).
    """
    import jax

    choice = requested_device(role, flag_value)
    configure_platforms(choice)
    device = select_device(choice)
    if device != jax.devices()[0]:
        jax.config.update("jax_default_device", device)
    print(f"[{role}] device: {describe_device(device)} (asked for {choice!r}, jax backend "
          f"{jax.default_backend()!r})", flush=True)
    return device
