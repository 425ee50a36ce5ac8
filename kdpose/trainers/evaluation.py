"""Evaluation of a model on a split: predictions gathered over hosts, then the viewpoint report
with shape-bootstrap intervals (``kdpose.intervals``); the per-record predictions saved for paired
comparisons of two runs."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from kdpose import files, intervals, metrics, sharding
from kdpose.data import pipeline

# What the eval step reads from a batch.
_EVAL_KEYS = ("image", "box", "viewpoint", "points", "symmetry")


def predict_split(eval_step: Callable, variables: Any, data: pipeline.SplitData, *,
                  global_batch_size: int, mesh: Mesh) -> dict[str, np.ndarray]:
  """Runs the jitted ``eval_step(variables, batch)`` over every kept record of ``data``.

  Returns numpy arrays in record order: viewpoint ``[n, 3]`` and confidence ``[n, 3]`` of the
  predictions, error ``[n]`` (degrees), and the labels ``target [n, 3]`` (degrees). Each row's
  record index travels with it through the devices and the gather over processes, and orders
  the rows: which rows of a global batch a process holds is the mesh's business.
  """
  loader = pipeline.BatchLoader(data)
  outputs = []
  try:
    for batch in pipeline.eval_batches(
        loader, global_batch_size=global_batch_size, process_index=jax.process_index(),
        process_count=jax.process_count()):
      global_batch = sharding.host_to_global(
          {k: batch[k] for k in (*_EVAL_KEYS, "index", "valid")}, mesh)
      out = eval_step(variables, {k: global_batch[k] for k in _EVAL_KEYS})
      out |= {"target": global_batch["viewpoint"], "index": global_batch["index"],
              "valid": global_batch["valid"]}
      outputs.append(multihost_utils.process_allgather(out, tiled=True))
  finally:
    loader.close()
  gathered = {key: np.concatenate([o[key] for o in outputs]) for key in outputs[0]}
  valid = gathered.pop("valid")
  indices = gathered.pop("index")[valid]
  order = np.argsort(indices, kind="stable")
  if not np.array_equal(indices[order], data.indices):
    raise ValueError(f"Evaluation gathered {indices.size} predictions that are not the "
                     f"{data.indices.size} records of the split once each.")
  return {key: value[valid][order] for key, value in gathered.items()}


# The per-record arrays a predictions file keeps: enough to recompute and pair the headline numbers.
_SAVED_KEYS = ("error", "category", "shape_id", "index", "novel")


def _with_records(predictions: dict[str, np.ndarray], data: pipeline.SplitData
                  ) -> dict[str, np.ndarray]:
  """Adds what identifies each record: ``category [n]``, ``shape_id [n]``, ``index [n]`` (its
  record index in the split) and ``novel [n]`` (bool: its category is held out of training)."""
  return predictions | {"category": data.categories, "shape_id": data.shape_ids,
                        "index": data.indices,
                        "novel": np.isin(data.categories, data.novel_categories)}


def report_with_intervals(errors: np.ndarray, categories: np.ndarray, shape_ids: np.ndarray,
                          data: pipeline.SplitData, num_resamples: int = 1000) -> dict:
  """The ``metrics.viewpoint_report`` of ``errors [n]`` (degrees, up to symmetry) of records of
  ``data`` with these ``categories`` and ``shape_ids`` ``[n]``, with ``"intervals"``: the
  ``intervals.shape_bootstrap`` of its mean/base/novel numbers."""
  report = metrics.viewpoint_report(
      errors, categories, novel_categories=data.novel_categories,
      category_symmetry=metrics.symmetry_by_name(data.category_names, data.category_symmetry))
  report["intervals"] = intervals.shape_bootstrap(
      errors, categories, shape_ids, data.novel_categories, num_resamples=num_resamples)
  return report


def _report(predictions: dict[str, np.ndarray], data: pipeline.SplitData) -> dict:
  return report_with_intervals(predictions["error"], predictions["category"],
                               predictions["shape_id"], data)


def evaluate_split(eval_step: Callable, variables: Any, data: pipeline.SplitData, *,
                   global_batch_size: int, mesh: Mesh) -> tuple[dict, dict[str, np.ndarray]]:
  """The ``metrics.viewpoint_report`` of ``data`` (with ``"intervals"``) and the predictions
  behind it: the ``predict_split`` arrays and the ``_with_records`` ones, in record order."""
  predictions = _with_records(predict_split(
      eval_step, variables, data, global_batch_size=global_batch_size, mesh=mesh), data)
  return _report(predictions, data), predictions


def evaluate_views(eval_step: Callable, variables: Any, headline: pipeline.SplitData,
                   all_views: pipeline.SplitData, *, global_batch_size: int, mesh: Mesh
                   ) -> tuple[dict, dict[str, np.ndarray]]:
  """``evaluate_split`` of the ``headline`` split (the eval filter's records), its report also
  holding ``"all_views"``: the report of ``all_views``, the same split unfiltered. One
  prediction pass over ``all_views``; the headline is the subset of its records."""
  predictions = _with_records(predict_split(
      eval_step, variables, all_views, global_batch_size=global_batch_size, mesh=mesh), all_views)
  kept = np.isin(all_views.indices, headline.indices)
  if not np.array_equal(all_views.indices[kept], headline.indices):
    raise ValueError(f"{len(headline.indices)} headline records are not all among the "
                     f"{len(all_views.indices)} records of the unfiltered split.")
  headline_predictions = {key: value[kept] for key, value in predictions.items()}
  report = _report(headline_predictions, headline)
  report["all_views"] = _report(predictions, all_views)
  return report, headline_predictions


def report_scalars(report: dict, prefix: str) -> dict[str, float]:
  """Headline numbers of a report as flat scalars, e.g. ``eval/test/novel/acc30``; groups that
  a report has no category of (NaN) are left out."""
  groups = ("mean", "base", "novel", "symmetric", "asymmetric", "pooled")
  return {f"{prefix}/{group}/{key}": report[group][key]
          for group in groups if group in report for key in ("acc30", "med_err")
          if np.isfinite(report[group][key])}


def report_path(workdir: str, stage: str, split: str) -> str:
  return os.path.join(workdir, "eval", f"{stage}_{split}.json")


def predictions_path(report_file: str) -> str:
  """The per-record predictions file beside a JSON report: the same name, ``.npz``."""
  return os.path.splitext(report_file)[0] + ".npz"


def write_report(report: dict, path: str) -> None:
  """Writes the JSON report atomically (process 0 only): never a half-written file."""
  if jax.process_index() != 0:
    return
  files.write_atomically(path, json.dumps(report, indent=2, sort_keys=True))
  logging.info("Wrote the report %s.", path)


def write_predictions(predictions: dict[str, np.ndarray], path: str) -> None:
  """Writes the ``_SAVED_KEYS`` arrays of ``_with_records`` predictions to ``path`` (.npz),
  atomically and on process 0 only: error ``[n]`` (degrees), category ``[n]``, shape_id ``[n]``
  (str), index ``[n]`` (record index in the split), novel ``[n]`` (bool)."""
  if jax.process_index() != 0:
    return
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **{key: np.asarray(predictions[key]) for key in _SAVED_KEYS})
  files.write_atomically(path, buffer.getvalue())


def load_predictions(path: str) -> dict[str, np.ndarray]:
  """The arrays ``write_predictions`` wrote to ``path``."""
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"No predictions file {path}: evaluate the run first "
                            "(python -m kdpose.evaluate --workdir ...).")
  with np.load(io.BytesIO(epath.Path(path).read_bytes()), allow_pickle=False) as saved:
    missing = sorted(set(_SAVED_KEYS) - set(saved.files))
    if missing:
      raise KeyError(f"{path} lacks {missing}; it has {sorted(saved.files)}.")
    return {key: saved[key] for key in _SAVED_KEYS}


def _record_mismatch(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str | None:
  """What differs between the records of two predictions, or None."""
  if a["index"].size != b["index"].size:
    return f"{a['index'].size} vs {b['index'].size} records"
  for key in ("index", "shape_id", "category", "novel"):
    differ = np.flatnonzero(a[key] != b[key])
    if differ.size:
      k = differ[0]
      return (f"{key} differs at {differ.size} of {a[key].size} records (first: position {k}, "
              f"{a[key][k].item()!r} vs {b[key][k].item()!r})")
  return None


def compare_predictions(a: dict[str, np.ndarray], b: dict[str, np.ndarray],
                        names: tuple[str, str], **bootstrap) -> dict:
  """``intervals.paired_bootstrap`` of predictions ``a`` and ``b`` (``load_predictions``) of two
  models on the same records; ``names`` (their files) name them when the records differ.
  ``bootstrap``: keyword arguments of ``paired_bootstrap`` (num_resamples, level, seed)."""
  mismatch = _record_mismatch(a, b)
  if mismatch:
    raise ValueError(f"{names[0]} and {names[1]} do not cover the same records ({mismatch}): "
                     "evaluate both runs on the same dataset, split and eval filter.")
  novel = np.unique(a["category"][a["novel"]]).tolist()
  return intervals.paired_bootstrap(a["error"], b["error"], a["category"], a["shape_id"], novel,
                                    **bootstrap)
