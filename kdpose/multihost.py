"""Joining a multi-process JAX job, before anything touches a device.

Checked in this order:
  1. ``KDPOSE_COORDINATOR`` (host:port of process 0), ``KDPOSE_NUM_PROCESSES`` and
     ``KDPOSE_PROCESS_ID``: explicit arguments (``tools/launch_local.py`` sets them).
  2. ``KDPOSE_DISTRIBUTED=1``, ``JAX_COORDINATOR_ADDRESS``, or a SLURM job of several tasks:
     ``jax.distributed.initialize()`` finds its arguments itself (Cloud TPU metadata, SLURM,
     Open MPI).
  3. Neither: a single process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax

EXPLICIT = ("KDPOSE_COORDINATOR", "KDPOSE_NUM_PROCESSES", "KDPOSE_PROCESS_ID")


def initialize_from_env(environ: Mapping[str, str] = os.environ) -> bool:
  """Calls ``jax.distributed.initialize`` as ``environ`` asks; returns whether it did.

  Raises ValueError when only some of the ``EXPLICIT`` variables are set."""
  given = [name for name in EXPLICIT if name in environ]
  # CPU devices of different processes talk through gloo (the pinned jax's default, named
  # here so that a change of default cannot leave multi-process CPU runs without collectives).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if given:
    if len(given) != len(EXPLICIT):
      raise ValueError(f"Set all of {', '.join(EXPLICIT)} or none of them; only {given} set.")
    jax.distributed.initialize(coordinator_address=environ["KDPOSE_COORDINATOR"],
                               num_processes=int(environ["KDPOSE_NUM_PROCESSES"]),
                               process_id=int(environ["KDPOSE_PROCESS_ID"]))
    return True
  if (environ.get("KDPOSE_DISTRIBUTED") == "1" or "JAX_COORDINATOR_ADDRESS" in environ
      or int(environ.get("SLURM_NTASKS", "1")) > 1):
    jax.distributed.initialize()
    return True
  return False
