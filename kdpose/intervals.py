"""Bootstrap intervals of the headline numbers, resampling shapes (not images).

The views of one shape (one CAD model or mesh) are not independent samples: a model that fails
on a shape tends to fail on all of its views. So the bootstrap draws shapes: within each category
as many shapes as it has, with replacement, each drawn shape bringing all of its records. Each
resample recomputes per-category Acc@30 and MedErr and their unweighted means over all / base /
novel categories (the headline numbers, METHOD section 2); the interval is the percentile
interval of those resampled numbers. The paired bootstrap applies the same draws to two models'
errors on the same records, for the interval of their difference.

Host-side numpy, float64: errors in degrees, Acc@30 in percent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kdpose.metrics import ACC_THRESHOLD_DEG

GROUPS = ("mean", "base", "novel")
METRICS = ("acc30", "med_err")
_METRIC_NAMES = {"acc30": "Acc@30", "med_err": "MedErr"}
# Elements of one block of the [resamples, records] rank arrays (bounds memory on big categories).
_BLOCK_ELEMENTS = 1 << 20


@dataclasses.dataclass(frozen=True)
class _Stratum:
  """The records of one category.

  Attributes:
    novel: whether the category is held out of training.
    positions: ``[n_c]`` positions of its records in the split.
    shape: ``[n_c]`` index of each record's shape among the category's ``num_shapes``.
    num_shapes: distinct shapes of the category.
  """

  novel: bool
  positions: np.ndarray
  shape: np.ndarray
  num_shapes: int


def _strata(categories, shape_ids, novel_categories: Sequence[str]) -> list[_Stratum]:
  """One stratum per category (in sorted name order) of ``categories``/``shape_ids [n]``."""
  categories = np.asarray(categories).astype(str).reshape(-1)
  shape_ids = np.asarray(shape_ids).astype(str).reshape(-1)
  if categories.shape != shape_ids.shape or categories.size == 0:
    raise ValueError(f"Bootstrap needs one shape id per record and at least one record; got "
                     f"{categories.size} categories and {shape_ids.size} shape ids.")
  novel = set(novel_categories)
  strata = []
  for name in np.unique(categories):
    positions = np.flatnonzero(categories == name)
    _, shape = np.unique(shape_ids[positions], return_inverse=True)
    strata.append(_Stratum(str(name) in novel, positions, shape, int(shape.max()) + 1))
  return strata


def _category_numbers(errors: np.ndarray, shape: np.ndarray, counts: np.ndarray,
                      threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """Acc@threshold (%) and median error (degrees), each ``[R]``, of one category.

  Args:
    errors: ``[n_c]`` errors of the category's records, degrees.
    shape: ``[n_c]`` shape index of each record.
    counts: ``[R, num_shapes]`` times each shape is drawn in each resample (all ones: the data).
    threshold: accuracy threshold, degrees.

  The median is that of every drawn record (a shape drawn twice counts its records twice), and
  as in ``np.median`` the mean of the two middle values when their number is even.
  """
  num_shapes = counts.shape[1]
  images = np.bincount(shape, minlength=num_shapes)  # [S] records per shape
  hits = np.bincount(shape, weights=errors <= threshold, minlength=num_shapes)  # [S]
  total = counts @ images  # [R] records drawn
  acc = 100.0 * (counts @ hits) / total
  order = np.argsort(errors, kind="stable")
  sorted_errors, sorted_shape = errors[order], shape[order]
  middle = np.stack([(total - 1) // 2, total // 2], -1)  # [R, 2] 0-based ranks of the middle
  block = max(1, _BLOCK_ELEMENTS // errors.size)
  median = np.empty(len(counts))
  for start in range(0, len(counts), block):
    cumulative = np.cumsum(counts[start:start + block, sorted_shape], axis=1)  # [r, n_c]
    # Rank k falls on the first sorted record whose cumulative draw count exceeds k.
    record = (cumulative[:, None, :] <= middle[start:start + block, :, None]).sum(-1)  # [r, 2]
    median[start:start + block] = sorted_errors[record].mean(-1)
  return acc, median


def _headlines(errors: np.ndarray, strata: list[_Stratum], counts: list[np.ndarray],
               threshold: float) -> dict[str, dict[str, np.ndarray]]:
  """group -> metric -> ``[R]`` unweighted mean over the group's categories; groups without
  categories are left out. ``counts``: one ``[R, num_shapes]`` array per stratum."""
  per_category = [_category_numbers(errors[s.positions], s.shape, c, threshold)
                  for s, c in zip(strata, counts, strict=True)]
  headlines = {}
  for group in GROUPS:
    members = [numbers for s, numbers in zip(strata, per_category, strict=True)
               if group == "mean" or s.novel == (group == "novel")]
    if members:
      headlines[group] = {metric: np.mean([m[k] for m in members], axis=0)
                          for k, metric in enumerate(METRICS)}
  return headlines


def _resampled(error_sets: Sequence, categories, shape_ids, novel_categories: Sequence[str],
               num_resamples: int, seed: int, threshold: float) -> list[tuple[dict, dict]]:
  """(point, resampled) headline numbers of each ``[n]`` error array in ``error_sets``, all
  under the same shape draws: group -> metric -> float / ``[num_resamples]``."""
  if num_resamples < 1:
    raise ValueError(f"num_resamples must be at least 1, got {num_resamples}.")
  strata = _strata(categories, shape_ids, novel_categories)
  error_sets = [np.asarray(e, np.float64).reshape(-1) for e in error_sets]
  for errors in error_sets:
    if errors.size != len(np.asarray(categories).reshape(-1)) or not np.all(np.isfinite(errors)):
      raise ValueError(f"Bootstrap needs one finite error per record: {errors.size} errors "
                       f"({np.sum(~np.isfinite(errors))} non-finite) for "
                       f"{np.asarray(categories).size} records.")
  rng = np.random.default_rng(seed)
  draws = [rng.multinomial(s.num_shapes, np.full(s.num_shapes, 1.0 / s.num_shapes),
                           size=num_resamples) for s in strata]
  data = [np.ones((1, s.num_shapes), np.int64) for s in strata]
  results = []
  for errors in error_sets:
    point = _headlines(errors, strata, data, threshold)
    point = {g: {m: float(v[0]) for m, v in values.items()} for g, values in point.items()}
    results.append((point, _headlines(errors, strata, draws, threshold)))
  return results


def _interval(point: float, samples: np.ndarray, level: float) -> dict[str, float]:
  low, high = np.percentile(samples, [50.0 * (1.0 - level), 50.0 * (1.0 + level)])
  return {"point": point, "low": float(low), "high": float(high)}


def _settings(num_resamples: int, level: float, seed: int) -> dict:
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}.")
  return {"unit": "shape", "resamples": num_resamples, "level": level, "seed": seed}


def shape_bootstrap(errors, categories, shape_ids, novel_categories: Sequence[str] = (), *,
                    num_resamples: int = 1000, level: float = 0.95, seed: int = 0,
                    threshold: float = ACC_THRESHOLD_DEG) -> dict:
  """Percentile intervals of the headline numbers, resampling shapes within each category.

  Args:
    errors: ``[n]`` per-record errors, degrees.
    categories: ``[n]`` category names.
    shape_ids: ``[n]`` shape names (records of one shape are resampled together).
    novel_categories: names of the categories held out of training.
    num_resamples: bootstrap resamples B.
    level: coverage of the intervals (0.95: the 2.5 and 97.5 percentiles).
    seed: seed of the draws.
    threshold: accuracy threshold, degrees.

  Returns:
    ``{"unit": "shape", "resamples", "level", "seed", group: {metric: {"point", "low",
    "high"}}}`` for group in mean/base/novel (those with categories) and metric in acc30 (%) /
    med_err (degrees).
  """
  settings = _settings(num_resamples, level, seed)
  [(point, samples)] = _resampled([errors], categories, shape_ids, novel_categories,
                                  num_resamples, seed, threshold)
  return settings | {group: {m: _interval(point[group][m], samples[group][m], level)
                             for m in METRICS} for group in point}


def paired_bootstrap(errors_a, errors_b, categories, shape_ids,
                     novel_categories: Sequence[str] = (), *, num_resamples: int = 1000,
                     level: float = 0.95, seed: int = 0,
                     threshold: float = ACC_THRESHOLD_DEG) -> dict:
  """Intervals of two models A and B on the same records and of their difference A - B, both
  models seeing the same resampled shapes. Arguments as ``shape_bootstrap``; ``errors_a`` and
  ``errors_b`` are ``[n]`` errors of the same records (same order).

  Returns:
    ``{"unit": "shape", "resamples", "level", "seed", group: {metric: {"a", "b", "diff": each
    {"point", "low", "high"}, "share_positive": share of resamples where A - B > 0}}}``. Note
    that a positive difference is better for acc30 and worse for med_err.
  """
  settings = _settings(num_resamples, level, seed)
  (point_a, samples_a), (point_b, samples_b) = _resampled(
      [errors_a, errors_b], categories, shape_ids, novel_categories, num_resamples, seed,
      threshold)
  paired = {}
  for group in point_a:
    paired[group] = {}
    for m in METRICS:
      diff = samples_a[group][m] - samples_b[group][m]
      paired[group][m] = {
          "a": _interval(point_a[group][m], samples_a[group][m], level),
          "b": _interval(point_b[group][m], samples_b[group][m], level),
          "diff": _interval(point_a[group][m] - point_b[group][m], diff, level),
          "share_positive": float(np.mean(diff > 0)),
      }
  return settings | paired


def _cell(interval: dict[str, float]) -> str:
  return f"{interval['point']:7.2f} [{interval['low']:6.2f}, {interval['high']:6.2f}]"


def _heading(intervals: dict, title: str) -> list[str]:
  note = (f"{intervals['level']:.0%} intervals, {intervals['resamples']} resamples of "
          f"{intervals['unit']}s within each category")
  return [f"{title} ({note})" if title else note]


def format_intervals(intervals: dict, title: str = "") -> str:
  """A plain-text table of a ``shape_bootstrap`` result: point [low, high] per group."""
  lines = _heading(intervals, title)
  lines.append(f"{'group':<8} " + " ".join(f"{_METRIC_NAMES[m]:<24}" for m in METRICS))
  for group in GROUPS:
    if group in intervals:
      lines.append(f"{'[' + group + ']':<8} "
                   + " ".join(f"{_cell(intervals[group][m]):<24}" for m in METRICS))
  return "\n".join(lines)


def format_paired(paired: dict, title: str = "") -> str:
  """A plain-text table of a ``paired_bootstrap`` result: A, B and A - B with their intervals
  and the share of resamples where A - B > 0, one row per group and metric."""
  lines = _heading(paired, title)
  lines.append(f"{'group':<8} {'metric':<7} {'A':<24} {'B':<24} {'A - B':<24} P(A-B>0)")
  for group in GROUPS:
    for m in METRICS if group in paired else ():
      row = paired[group][m]
      lines.append(f"{'[' + group + ']':<8} {_METRIC_NAMES[m]:<7} {_cell(row['a']):<24} "
                   f"{_cell(row['b']):<24} {_cell(row['diff']):<24} {row['share_positive']:.3f}")
  return "\n".join(lines)
