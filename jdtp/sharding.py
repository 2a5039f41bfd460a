"""Data parallelism on JAX's own runtime: a 1-D ``('data',)`` mesh (design §13).

The train step is written for the *global* batch. The batch is sharded over
the mesh's ``data`` axis, everything else is replicated, and ``jax.jit``
inserts the cross-device reductions (the batch means). Noise drawn inside the
step has global shapes, so with partitionable threefry each device generates
only its shard and the numbers do not depend on the device count.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(num_devices: int = -1) -> jax.sharding.Mesh:
    """A ``('data',)`` mesh over the first ``num_devices`` devices (-1: all, across hosts)."""
    devices = jax.devices()
    if num_devices == -1:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(f"config.mesh_devices={num_devices}, but {len(devices)} devices are visible")
    if num_devices == len(devices):
        return jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return jax.sharding.Mesh(
        np.asarray(devices[:num_devices]), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )


def data_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_divisible(batch_size: int, mesh, field: str = "config.data.batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"{field}={batch_size} is not divisible by the {n} devices of the data mesh; "
            f"choose a multiple of {n} or set --config.mesh_devices to a divisor of {batch_size}"
        )


def global_batch(local_batch: dict, mesh) -> dict:
    """Assemble the global batch from this process's slice (multi-host safe)."""
    sharding = data_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()
    }


def replicate(tree, mesh):
    """Place a pytree fully replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))
