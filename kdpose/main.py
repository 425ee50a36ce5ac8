"""Entry point: ``python -m kdpose.main --config configs/X.py --workdir DIR``."""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and evaluation reports.")
flags.mark_flags_as_required(["config", "workdir"])


def _set_up_process() -> None:
  """Keeps TensorFlow (data and logging only) off accelerators; joins a multi-process job if
  the environment asks (``kdpose.multihost``)."""
  try:
    import tensorflow as tf  # only the entry point touches TF devices
  except ImportError as error:  # `pip install .` is the serving install.
    raise SystemExit(f"kdpose.main: training needs kdpose's `train` extra ({error}): "
                     "pip install -e '.[train]' (make setup installs it).") from error

  tf.config.set_visible_devices([], "GPU")
  import jax

  from kdpose import multihost

  multihost.initialize_from_env()
  logging.info("JAX process %d/%d (pid %d), %d local / %d global devices (%s).",
               jax.process_index(), jax.process_count(), os.getpid(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  _set_up_process()
  from kdpose import trainers  # after the process set-up
  from kdpose.trainers import preemption

  try:
    trainers.run(FLAGS.config, FLAGS.workdir)
  except preemption.Preempted as stopped:
    # Exit status 0: the step is saved; a scheduler that requeues the job resumes it.
    logging.warning("%s", stopped)


if __name__ == "__main__":
  app.run(main)
