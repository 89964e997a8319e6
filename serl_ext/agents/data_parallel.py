"""Data-parallel SAC / RLPD update over several devices with ``jax.sharding``.

The agent (parameters, optimiser state, target critic, ``rng``) is replicated on a 1-D
device mesh (axis ``"batch"``); every minibatch is split along its batch axis, ``B / N`` rows
per device. The update is the single-device one, :func:`serl_ext.agents.sac._update_impl`
(the same losses, ``lax.scan`` over the ``utd_ratio`` critic minibatches, the same random
draws from the agent's ``rng``), jitted with these input and output shardings; XLA's SPMD
partitioner inserts the all-reduces of the batch means (losses, gradients, metrics). So the
result equals :meth:`SACAgent.update` on one device up to the order of float additions in
those reductions (checked by ``tests/test_data_parallel.py``: rtol 1e-5).

Random numbers: a jitted computation's values do not depend on its shardings, so a draw of
shape ``(B, A)`` from the agent's key is the same as on one device; with jax's partitionable
threefry (``jax_threefry_partitionable``, the default since jax 0.5) each device also
computes only its own rows.

Layout: the learner's batch (``sample_mixed_many``) is ``utd_ratio`` minibatches stacked as
``(utd_ratio * B, ...)``. It is reshaped to ``(utd_ratio, B, ...)`` before placement and
sharded on axis 1, so that every critic step of the scan works on ``B / N`` local rows (not
whole minibatches per device); inside the jitted function it is flattened back for
``_update_impl``, whose own split then undoes the flattening. One exception: with image keys, random-crop
augmentation and ``utd_ratio`` > 1, the augmentation runs on the flattened batch, a layout
the mesh cannot split per minibatch, so XLA all-gathers the uint8 images once per update
(seen in the compiled HLO on two CPU devices; the encoder and the losses stay split).

Learner option: ``learner.data_parallel_devices`` (0 or 1: off; N >= 2: this update over the
first N of ``jax.devices()``), docs/gpu_and_devices.md.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from serl_ext.agents import sac

AXIS = "batch"


def _flatten_minibatches(minibatches: Any) -> Any:
    """Every leaf ``(U, B, ...) -> (U * B, ...)`` (inverse of ``common.split_minibatches``)."""
    return jax.tree_util.tree_map(lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), minibatches)


def _sharded_update_impl(agent: sac.SACAgent, minibatches: Any, utd_ratio: int):
    return sac._update_impl(agent, _flatten_minibatches(minibatches), utd_ratio)


class DataParallelUpdate:
    """``update(agent, batch, utd_ratio) -> (new_agent, info)`` over ``num_devices`` devices.

    Args:
      num_devices: N >= 2, the size of the 1-D mesh.
      devices: the devices to choose from (default ``jax.devices()``); the first N are used.

    Calling it: ``batch`` as for :meth:`serl_ext.agents.sac.SACAgent.update` (leaves
    ``(utd_ratio * B, ...)``, float32 / uint8 images / bool masks), ``agent`` a
    :class:`~serl_ext.agents.sac.SACAgent` (or a subclass such as the hybrid agent) on any
    device. Returns ``(new_agent, info)`` like ``SACAgent.update``, both replicated on the mesh
    (``jax.device_get`` and the checkpointer read them as usual; a replicated agent passed back
    in is not copied again).

    Raises ValueError when N < 2 or fewer than N devices exist; the call raises TypeError for an
    agent that is not a SACAgent and ValueError when the per-minibatch batch size B is not a
    multiple of N (and whatever ``SACAgent.update`` raises for a malformed batch).
    """

    def __init__(self, num_devices: int, devices: Optional[Sequence[Any]] = None):
        devices = list(jax.devices() if devices is None else devices)
        num_devices = int(num_devices)
        if num_devices < 2:
            raise ValueError(f"data parallelism needs num_devices >= 2, got {num_devices} (0 or 1 means off)")
        if len(devices) < num_devices:
            raise ValueError(
                f"data_parallel_devices={num_devices} but jax sees only {len(devices)} device(s): "
                f"{[str(d) for d in devices]} (on CPU, for tests: XLA_FLAGS=--xla_force_host_platform_device_count=N)"
            )
        self.num_devices = num_devices
        self.mesh = Mesh(np.asarray(devices[:num_devices]), (AXIS,))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        # (utd_ratio, B, ...) minibatches: the batch axis (1) is split, the utd axis is not.
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(None, AXIS))
        self._update = jax.jit(
            _sharded_update_impl,
            static_argnums=(2,),  # utd_ratio
            in_shardings=(self.replicated, self.batch_sharding),
            out_shardings=(self.replicated, self.replicated),
        )

    def place_batch(self, agent: sac.SACAgent, batch: Dict[str, Any], utd_ratio: int) -> Dict[str, Any]:
        """The checked batch (``agent``'s own checks) as ``(utd_ratio, B, ...)`` leaves split along
        B over the mesh. Raises ValueError as described in the class docstring."""
        checked = agent._check_batch(batch, int(utd_ratio))
        rows = int(checked["rewards"].shape[0]) // int(utd_ratio)
        if rows % self.num_devices != 0:
            raise ValueError(
                f"data parallel update: the minibatch size {rows} (batch of {rows * int(utd_ratio)} rows, "
                f"utd_ratio={int(utd_ratio)}) is not a multiple of the {self.num_devices} devices; choose "
                f"learner.batch_size divisible by learner.data_parallel_devices"
            )
        stacked = jax.tree_util.tree_map(lambda x: x.reshape((int(utd_ratio), rows) + x.shape[1:]), checked)
        return jax.device_put(stacked, self.batch_sharding)

    def place_agent(self, agent: sac.SACAgent) -> sac.SACAgent:
        """``agent`` replicated on every device of the mesh (no copy when it already is)."""
        return jax.device_put(agent, self.replicated)

    def __call__(self, agent: sac.SACAgent, batch: Dict[str, Any],
                 utd_ratio: int = 1) -> Tuple[sac.SACAgent, Dict[str, jax.Array]]:
        if not isinstance(agent, sac.SACAgent):
            raise TypeError(
                f"the data parallel update supports SAC agents (sac, sac_hybrid), got {type(agent).__name__}"
            )
        placed = self.place_batch(agent, batch, utd_ratio)
        return self._update(self.place_agent(agent), placed, int(utd_ratio))


def make_updater(num_devices: int, devices: Optional[Sequence[Any]] = None):
    """``update(agent, batch, utd_ratio) -> (new_agent, info)`` for the learner loop:
    ``agent.update(batch, utd_ratio)`` itself when ``num_devices`` is 0 or 1, else a
    :class:`DataParallelUpdate` over ``num_devices`` devices (its errors: ValueError when fewer
    devices exist or ``num_devices`` is negative)."""
    num_devices = int(num_devices)
    if num_devices < 0:
        raise ValueError(f"data_parallel_devices must be >= 0, got {num_devices}")
    if num_devices <= 1:
        return lambda agent, batch, utd_ratio=1: agent.update(batch, utd_ratio)
    return DataParallelUpdate(num_devices, devices)
