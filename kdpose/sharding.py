"""The device mesh and how host batches become global arrays.

Data parallel: one mesh axis ``data`` over every device of every process. Batches are sharded
along their first axis; train states are replicated. Losses are written on global arrays, so
under ``jit`` XLA inserts the collectives (e.g. the all-gather of the contrastive KD negatives).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices (all hosts) with the axis ``data``, in the device order
  ``jax.make_mesh`` picks for the platform (on TPU, one that follows the chip interconnect, so
  a process's devices need not be neighbours: evaluation never assumes which rows a process
  holds). Shardings propagate automatically (``AxisType.Auto``, not make_mesh's default)."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Shards the leading (batch) axis over the ``data`` axis."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (train states, frozen teachers)."""
  return NamedSharding(mesh, PartitionSpec())


def host_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """This process's share of a global batch; fails if the batch does not divide evenly."""
  num_devices, num_processes = mesh.devices.size, jax.process_count()
  if global_batch_size % num_devices:
    raise ValueError(
        f"Global batch size {global_batch_size} is not divisible by the {num_devices} devices "
        f"of the mesh; choose a multiple of {num_devices}.")
  return global_batch_size // num_processes


def host_to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's slice of the batch (numpy, leading axis) into global jax arrays."""
  sharding = batch_sharding(mesh)
  return {
      key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
      for key, value in batch.items()
  }
