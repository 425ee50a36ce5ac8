r"""The trained student as a self-contained export, and how it is loaded back.

  python -m kdpose.export --workdir runs/default [--out runs/default/export] [--step N] \
      [--serialized]

An export directory holds:
  model.json     format and its version, the student's model config, bin_size, image_size,
                 the input normalisation its encoder applies (``input``: the model takes RGB in
                 [0, 1] and normalises inside with this mean and std), the kdpose version, the
                 source run and step, the dataset's category names (informational), and the
                 size and sha256 of every checkpoint file.
  variables/     an orbax checkpoint of ``{"params", "batch_stats"}`` (no optimizer state).
  predictor.jax_export  optional (``--serialized``): the predictor serialized by ``jax.export``
                 (StableHLO, weights inside, lowered for CPU, CUDA and TPU, any batch size):
                 ``images`` float32 ``[B, image_size, image_size, 3]``, RGB in [0, 255], already
                 cropped -> ``(viewpoint [B, 3]`` degrees (azimuth, elevation, in-plane),
                 ``confidence [B, 3])``. ``load_serialized`` runs it with jax alone: no kdpose
                 model code, no flax. Its depthwise convolutions are those of the exporting
                 machine's backend (models/depthwise.py): right everywhere, fastest there.

``load_export`` and ``write_export`` import no training code and no TensorFlow: a serving
environment needs only kdpose's core dependencies (``pip install .``: jax, flax, optax,
orbax-checkpoint, ml-collections, numpy, Pillow, absl-py), not its ``train`` extra;
``tools/check_serving_install.sh`` checks that in a clean venv. ``export_student`` (reading a
training run) needs the ``train`` extra. An export is built in a temporary
sibling directory and renamed into place, so a killed export never reads as complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

import kdpose
from kdpose import files, inference, models, run_config

FORMAT_NAME = "kdpose-student-export"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
VARIABLES_DIR = "variables"
SERIALIZED_FILE = "predictor.jax_export"
_REQUIRED_KEYS = ("format", "format_version", "model", "bin_size", "image_size", "files")


# ---------------------------------------------------------------------------------------------
# Reading (serving side: no training code, no TensorFlow).


def read_metadata(model_dir: str) -> dict[str, Any]:
  """``model_dir/model.json`` after checking it is a kdpose export of this format version."""
  path = os.path.join(model_dir, MODEL_JSON)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: {model_dir} is not a kdpose export (or the "
                            "export did not finish). Write one with `python -m kdpose.export`.")
  try:
    with open(path) as f:
      meta = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is not valid JSON (truncated or corrupt?): {error}") from error
  if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
    raise ValueError(f"{path} does not describe a {FORMAT_NAME!r}.")
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path} has export format version {meta.get('format_version')!r}; this "
                     f"kdpose ({kdpose.__version__}) reads version {FORMAT_VERSION}. Export the "
                     "model again with this version of kdpose.")
  missing = [key for key in _REQUIRED_KEYS if key not in meta]
  if missing:
    raise ValueError(f"{path} lacks the fields {missing}.")
  return meta


def _file_record(path: str) -> dict[str, Any]:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def _manifest(root: str, subdir: str) -> dict[str, dict[str, Any]]:
  """Relative path -> size and sha256 of every file under ``root/subdir``."""
  records = {}
  for parent, _, names in os.walk(os.path.join(root, subdir)):
    for name in names:
      path = os.path.join(parent, name)
      records[os.path.relpath(path, root)] = _file_record(path)
  return records


def _verify_files(model_dir: str, files: dict[str, dict[str, Any]]) -> None:
  """Every file listed in model.json (``files``) is there, whole and unchanged."""
  for relpath, expected in sorted(files.items()):
    path = os.path.join(model_dir, relpath)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} is missing: the export in {model_dir} is incomplete.")
    size = os.path.getsize(path)
    if size != expected["bytes"] or _file_record(path)["sha256"] != expected["sha256"]:
      raise ValueError(f"{path} has {size} bytes, not the {expected['bytes']} bytes (and sha256) "
                       f"that {MODEL_JSON} records: the file is truncated or corrupt. Export "
                       "the model again.")


def abstract_variables(model: models.Student, image_size: int) -> dict[str, Any]:
  """``{"params", "batch_stats"}`` as shapes on the first local device (the restore target)."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                      {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})})


def load_export(model_dir: str) -> tuple[models.Student, dict[str, Any], dict[str, Any]]:
  """Loads an export: the student module, its variables and the metadata of model.json.

  Returns ``(model, variables, meta)``; ``model.apply(variables, crops, train=False)`` runs it
  (see ``inference.predict_crops``); ``meta["image_size"]`` and ``meta["bin_size"]`` say how.
  """
  model_dir = os.path.abspath(model_dir)
  meta = read_metadata(model_dir)
  _verify_files(model_dir, meta["files"])
  try:
    model = models.build_student(meta["model"], float(meta["bin_size"]))
  except (KeyError, ValueError, TypeError) as error:
    raise ValueError(f"{os.path.join(model_dir, MODEL_JSON)}: bad student model config: "
                     f"{error}") from error
  path = os.path.join(model_dir, VARIABLES_DIR)
  try:
    variables = ocp.StandardCheckpointer().restore(
        path, abstract_variables(model, int(meta["image_size"])))
  except (ValueError, KeyError, FileNotFoundError) as error:
    raise ValueError(f"{path}: the checkpoint does not restore into the model that "
                     f"{MODEL_JSON} describes: {error}") from error
  return model, variables, meta


# ---------------------------------------------------------------------------------------------
# Writing (training side).


def _restore_student(config, workdir: str, step: int | None) -> tuple[dict[str, Any], int]:
  """The student's ``{"params", "batch_stats"}`` and step from ``workdir/student/checkpoints``."""
  # Training code (and TensorFlow, through the data layer) only when reading a run, so that
  # this module stays importable with kdpose's core dependencies alone (no `train` extra).
  from kdpose import checkpoint, stages

  directory = os.path.join(workdir, "student", "checkpoints")
  checkpoints = checkpoint.StageCheckpoints(directory, read_only=True)
  try:
    steps = checkpoints.all_steps()
    if not steps or (step is not None and step not in steps):
      raise FileNotFoundError(f"{directory} has no complete checkpoint of step "
                              f"{'any' if step is None else step}; it has steps {steps}.")
    _, _, _, init_fn = stages.build_student(config)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                            jax.eval_shape(init_fn, jax.random.key(0)))
    state, _ = checkpoints.restore(abstract, step)
  finally:
    checkpoints.close()
  if int(state.step) < config.student.num_steps:
    logging.warning("Exporting the student at step %d of %d: it has not finished training.",
                    int(state.step), config.student.num_steps)
  return state.variables(), int(state.step)


def _dataset_metadata(config) -> dict[str, Any]:
  """Category names of the training dataset (informational; empty when it cannot be opened)."""
  from kdpose.data import features, registry

  dataset = {"name": config.dataset.name, "config_name": config.dataset.config_name}
  try:
    info = registry.get_builder(config.dataset).info
  except (ImportError, KeyError, FileNotFoundError, ValueError) as error:
    logging.warning("Export without category names: dataset %s unavailable (%s).",
                    config.dataset.name, error)
    return dict(dataset, category_names=[], novel_categories=[])
  return dict(dataset, category_names=list(info.features["category"].names),
              novel_categories=list((info.metadata or {}).get(features.NOVEL_CATEGORIES_KEY, [])))


def write_serialized(path: str, model: models.Student, variables: dict[str, Any],
                     image_size: int, bin_size: float) -> None:
  """The predictor (see the module docstring) with ``variables`` inside, serialized by
  ``jax.export`` for CPU, CUDA and TPU with a symbolic batch size."""

  def serve(images):
    return inference.predict_crops(model, variables, images / 255.0, bin_size=bin_size)

  images = jax.ShapeDtypeStruct(
      jax.export.symbolic_shape(f"b, {image_size}, {image_size}, 3"), jnp.float32)
  exported = jax.export.export(jax.jit(serve), platforms=("cpu", "cuda", "tpu"))(images)
  with open(path, "wb") as f:
    f.write(exported.serialize())


def load_serialized(model_dir: str):
  """``images [B, S, S, 3]`` (RGB in [0, 255]) -> ``(viewpoint [B, 3], confidence [B, 3])``:
  the export's ``predictor.jax_export``, checked against ``model.json``, run by jax alone."""
  files = read_metadata(model_dir)["files"]
  if SERIALIZED_FILE not in files:
    raise FileNotFoundError(f"{model_dir} has no {SERIALIZED_FILE}: export it with "
                            "`python -m kdpose.export --serialized`.")
  _verify_files(model_dir, {SERIALIZED_FILE: files[SERIALIZED_FILE]})
  with open(os.path.join(model_dir, SERIALIZED_FILE), "rb") as f:
    return jax.export.deserialize(bytearray(f.read())).call


def _replace_directory(staging: str, out_dir: str) -> None:
  """Renames the finished ``staging`` directory to ``out_dir``, replacing an older export."""
  if not os.path.exists(out_dir):
    os.rename(staging, out_dir)
    return
  if os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, MODEL_JSON)):
    raise FileExistsError(f"{out_dir} exists and is not a kdpose export: not replacing it.")
  old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
  os.rename(out_dir, os.path.join(old, "export"))
  os.rename(staging, out_dir)
  shutil.rmtree(old)


def write_export(out_dir: str, model_config: dict[str, Any], variables: dict[str, Any], *,
                 image_size: int, bin_size: float, source: dict[str, Any],
                 dataset: dict[str, Any] | None = None, serialized: bool = False) -> str:
  """Writes the student of ``model_config`` with ``variables`` (``{"params", "batch_stats"}``)
  as an export at ``out_dir``, replacing an older export there; returns ``out_dir``.

  ``image_size`` (pixels) and ``bin_size`` (degrees) are the student's; ``source`` (the run's
  workdir and step) and ``dataset`` (names, categories) are recorded for information.
  """
  if files.is_url(out_dir):
    raise ValueError(f"Export to {out_dir}: an export is written to a local directory (its "
                     "directory swap is a local rename); export here, then copy it "
                     "(gsutil -m cp -r).")
  out_dir = os.path.abspath(out_dir)
  meta = {
      "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
      "kdpose_version": kdpose.__version__, "model": model_config,
      "bin_size": float(bin_size), "image_size": int(image_size),
      "input": dict(models.input_normalization(model_config), range="RGB in [0, 1]"),
      "source": dict(source, created=datetime.datetime.now(datetime.UTC).isoformat(
          timespec="seconds")),
      "dataset": dataset or {},
  }
  os.makedirs(os.path.dirname(out_dir), exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-",
                             dir=os.path.dirname(out_dir))
  try:
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would make the export private.
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(staging, VARIABLES_DIR), jax.device_get(variables))
    checkpointer.wait_until_finished()
    if serialized:
      write_serialized(os.path.join(staging, SERIALIZED_FILE),
                       models.build_student(meta["model"], meta["bin_size"]), variables,
                       meta["image_size"], meta["bin_size"])
    meta["files"] = _manifest(staging, VARIABLES_DIR)
    if serialized:
      meta["files"][SERIALIZED_FILE] = _file_record(os.path.join(staging, SERIALIZED_FILE))
    with open(os.path.join(staging, MODEL_JSON), "w") as f:  # Last: it marks the export whole.
      json.dump(meta, f, indent=2, sort_keys=True)
    _replace_directory(staging, out_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return out_dir


def export_student(workdir: str, out_dir: str | None = None, step: int | None = None,
                   serialized: bool = False) -> str:
  """Exports the student of the run in ``workdir`` (latest checkpoint, or ``step``).

  Returns the export directory (default ``workdir/export``).
  """
  workdir = os.path.abspath(workdir)
  config = run_config.load_run_config(workdir)
  variables, step = _restore_student(config, workdir, step)
  return write_export(out_dir or os.path.join(workdir, "export"),
                      config.student.model.to_dict(), variables,
                      image_size=config.image_size, bin_size=config.bin_size,
                      source={"workdir": workdir, "step": step},
                      dataset=_dataset_metadata(config), serialized=serialized)


def _define_flags() -> None:
  """Command-line flags, defined only when run as a program: importing this module (e.g. from
  kdpose.predict) must not claim flag names."""
  from absl import flags

  flags.DEFINE_string("workdir", None, "A training run's workdir (with config.json and "
                      "student/checkpoints).")
  flags.DEFINE_string("out", None, "Export directory (default: WORKDIR/export).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_bool("serialized", False, "Also write the predictor serialized by jax.export "
                    f"({SERIALIZED_FILE}).")
  flags.mark_flag_as_required("workdir")


def main(argv) -> None:
  from absl import app, flags

  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  out_dir = export_student(values.workdir, values.out, values.step, values.serialized)
  print(f"Exported the student (step {read_metadata(out_dir)['source']['step']}) to {out_dir}")


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
