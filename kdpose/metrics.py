"""Viewpoint metrics: Acc@30 and median geodesic error, per category, then averaged.

Host-side numpy (float64); the training loop feeds it predictions gathered from the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kdpose import geometry

ACC_THRESHOLD_DEG = 30.0
# How format_report tags a category symmetric about its vertical axis (none gets no tag).
_SYMMETRY_TAGS = {"two_fold": " (sym 2)", "continuous": " (sym inf)"}


def _summary(errors: np.ndarray, threshold: float) -> dict[str, float]:
  """Acc@threshold in percent, median error in degrees and the count of ``errors [n]``."""
  return {
      "acc30": float(np.mean(errors <= threshold) * 100.0),
      "med_err": float(np.median(errors)),
      "count": int(errors.size),
  }


def _mean_over(per_category: dict[str, dict[str, float]], names: Sequence[str]) -> dict:
  """Unweighted mean of Acc@30 and MedErr over the named categories (empty -> NaN)."""
  if not names:
    return {"acc30": float("nan"), "med_err": float("nan"), "num_categories": 0}
  return {
      "acc30": float(np.mean([per_category[n]["acc30"] for n in names])),
      "med_err": float(np.mean([per_category[n]["med_err"] for n in names])),
      "num_categories": len(names),
  }


def symmetry_by_name(category_names: Sequence[str], codes) -> dict[str, str]:
  """Category name -> symmetry name (``geometry.SYMMETRY_NAMES``) from ``codes
  [num_categories]`` (int, in the order of ``category_names``)."""
  return {name: geometry.SYMMETRY_NAMES[int(code)]
          for name, code in zip(category_names, np.asarray(codes).tolist(), strict=True)}


def angle_errors(pred, target, symmetry=None) -> np.ndarray:
  """Absolute error of each angle, ``[n, 3]`` in degrees, between viewpoints ``pred`` and
  ``target`` ``[n, 3]`` (degrees; in the order of ``geometry.ANGLE_NAMES``). Azimuth and
  in-plane errors are taken on the circle, in [0, 180].

  ``symmetry [n]`` (int codes, ``geometry.SYMMETRY_NAMES``; None: none) takes the azimuth error
  up to the object's symmetry, as ``geometry.symmetric_rotation_error`` does: two-fold samples
  get ``min(e, 180 - e)`` in [0, 90], continuous ones NaN (every azimuth is right: no error to
  speak of, and a 0 would flatter azimuth statistics).
  """
  diff = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
  errors = np.abs(np.stack([geometry.wrap_degrees(diff[..., 0]), diff[..., 1],
                            geometry.wrap_degrees(diff[..., 2])], -1))
  if symmetry is not None:
    symmetry = np.asarray(symmetry)
    azimuth = errors[..., 0]
    errors[..., 0] = np.where(symmetry == geometry.SYMMETRY_CONTINUOUS, np.nan,
                              np.where(symmetry == geometry.SYMMETRY_TWO_FOLD,
                                       np.minimum(azimuth, 180.0 - azimuth), azimuth))
  return errors


def viewpoint_report(
    errors,
    categories,
    novel_categories: Sequence[str] = (),
    threshold: float = ACC_THRESHOLD_DEG,
    category_symmetry: Mapping[str, str] | None = None,
) -> dict:
  """Summarises geodesic errors per category.

  The headline means include the categories symmetric about their vertical axis: their errors
  are taken up to the symmetry (``geometry.symmetric_rotation_error``), so they are fair to
  average. The "symmetric" and "asymmetric" means let a reader see both sides apart.

  Args:
    errors: ``[n]`` geodesic rotation errors in degrees.
    categories: ``[n]`` category names of the samples.
    novel_categories: names of categories held out of training.
    threshold: accuracy threshold in degrees (30 for Acc@30).
    category_symmetry: category name -> symmetry name (``geometry.SYMMETRY_NAMES``); a
      category it does not name (or all, when None) is "none".

  Returns:
    ``{"per_category": {name: {acc30 (%), med_err (deg), count, novel, symmetry}}, "mean":
    headline numbers averaged over categories, "pooled": over all samples, "base": mean over
    base categories, "novel": mean over novel categories, "symmetric": mean over categories of
    symmetry other than none, "asymmetric": mean over the others}``.
  """
  errors = np.asarray(errors, dtype=np.float64).reshape(-1)
  categories = np.asarray(categories).reshape(-1).astype(str)
  if errors.shape != categories.shape:
    raise ValueError(f"{errors.size} errors but {categories.size} categories.")
  if errors.size == 0:
    raise ValueError("viewpoint_report needs at least one sample.")
  if not np.all(np.isfinite(errors)):
    raise ValueError(f"{np.sum(~np.isfinite(errors))} non-finite errors.")
  category_symmetry = dict(category_symmetry or {})
  bad = sorted(n for n, v in category_symmetry.items() if v not in geometry.SYMMETRY_NAMES)
  if bad:
    raise ValueError(f"category_symmetry of {bad} is not one of {geometry.SYMMETRY_NAMES}.")
  novel = set(novel_categories)
  per_category = {}
  for name in sorted(set(categories.tolist())):
    per_category[name] = _summary(errors[categories == name], threshold)
    per_category[name]["novel"] = name in novel
    per_category[name]["symmetry"] = category_symmetry.get(name, "none")
  names = list(per_category)
  symmetric = [n for n in names if per_category[n]["symmetry"] != "none"]
  return {
      "per_category": per_category,
      "mean": _mean_over(per_category, names),
      "pooled": _summary(errors, threshold),
      "base": _mean_over(per_category, [n for n in names if n not in novel]),
      "novel": _mean_over(per_category, [n for n in names if n in novel]),
      "symmetric": _mean_over(per_category, symmetric),
      "asymmetric": _mean_over(per_category, [n for n in names if n not in symmetric]),
  }


def format_report(report: dict, title: str = "") -> str:
  """A plain-text table of a ``viewpoint_report``: one row per category, tagged novel and
  "(sym 2)" / "(sym inf)" when symmetric about its vertical axis, then the means (the symmetric
  and asymmetric ones only when some category is symmetric)."""
  labels = {name: name + (" (novel)" if row["novel"] else "")
            + _SYMMETRY_TAGS.get(row["symmetry"], "")
            for name, row in report["per_category"].items()}
  width = max([20, *(len(label) + 1 for label in labels.values())])
  lines = [title] if title else []
  lines.append(f"{'category':<{width}} {'n':>6} {'Acc@30':>8} {'MedErr':>8}")
  for name, row in report["per_category"].items():
    lines.append(f"{labels[name]:<{width}} {row['count']:>6} {row['acc30']:>8.2f} "
                 f"{row['med_err']:>8.2f}")
  groups = ["mean", "base", "novel"]
  if report["symmetric"]["num_categories"]:
    groups += ["symmetric", "asymmetric"]
  for key in (*groups, "pooled"):
    row = report[key]
    if row.get("num_categories", 1):
      lines.append(f"{'[' + key + ']':<{width}} {'':>6} {row['acc30']:>8.2f} "
                   f"{row['med_err']:>8.2f}")
  return "\n".join(lines)
