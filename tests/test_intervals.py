"""Shape-bootstrap intervals of the headline numbers, paired comparisons and their files."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from kdpose import intervals, metrics
from kdpose.trainers import evaluation

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(num_categories=6, shapes_per_category=5, views_per_shape=8, seed=0):
  """Errors ``[n]`` (degrees), categories and shape ids of a made-up split; the last two
  categories are novel."""
  rng = np.random.default_rng(seed)
  categories, shape_ids = [], []
  for c in range(num_categories):
    for s in range(shapes_per_category):
      categories += [f"cat{c}"] * views_per_shape
      shape_ids += [f"cat{c}_shape{s}"] * views_per_shape
  errors = rng.gamma(1.5, 20.0, size=len(categories))
  novel = [f"cat{c}" for c in range(num_categories - 2, num_categories)]
  return errors, np.array(categories), np.array(shape_ids), novel


def test_resampling_shapes_is_wider_than_resampling_images():
  # One shape always right, one always wrong: a resample may draw the right one twice (100%) or
  # the wrong one twice (0%), each a quarter of the time. Views resampled alone hover near 50%.
  errors = np.array([5.0] * 20 + [90.0] * 20)
  categories = np.array(["chair"] * 40)
  shapes = np.array(["good"] * 20 + ["bad"] * 20)
  by_shape = intervals.shape_bootstrap(errors, categories, shapes)["mean"]["acc30"]
  by_image = intervals.shape_bootstrap(errors, categories,
                                       np.arange(40).astype(str))["mean"]["acc30"]
  assert by_shape == {"point": 50.0, "low": 0.0, "high": 100.0}
  assert by_image["point"] == 50.0
  assert 25.0 < by_image["low"] < 50.0 < by_image["high"] < 75.0


def test_point_is_the_report_number_and_lies_in_its_interval():
  errors, categories, shapes, novel = _records()
  result = intervals.shape_bootstrap(errors, categories, shapes, novel)
  report = metrics.viewpoint_report(errors, categories, novel_categories=novel)
  assert (result["unit"], result["resamples"], result["level"]) == ("shape", 1000, 0.95)
  for group in intervals.GROUPS:
    for metric in intervals.METRICS:
      row = result[group][metric]
      assert row["point"] == pytest.approx(report[group][metric], abs=1e-9)
      assert row["low"] < row["point"] < row["high"]


def test_groups_without_categories_are_left_out():
  errors, categories, shapes, _ = _records()
  result = intervals.shape_bootstrap(errors, categories, shapes)
  assert "novel" not in result and set(intervals.GROUPS) - {"novel"} <= set(result)
  assert "[novel]" not in intervals.format_intervals(result)


def test_stratified_resamples_keep_every_category():
  # Within each category every shape has the same errors, so a resample that keeps each
  # category (and its number of shapes) has exactly the data's means; pooling the nine shapes
  # would lose the one-shape category "b" in about a third of the resamples.
  categories = np.array(["a"] * 6 + ["b"] * 2 + ["c"] * 10)
  shapes = np.array([f"a{i // 2}" for i in range(6)] + ["b0"] * 2
                    + [f"c{i // 2}" for i in range(10)])
  errors = np.array([0.0, 20.0] * 3 + [90.0, 100.0] + [10.0, 50.0] * 5)
  result = intervals.shape_bootstrap(errors, categories, shapes, ["b"])
  # Per category: Acc@30 100 / 0 / 50, MedErr 10 / 95 / 30.
  assert result["mean"]["acc30"] == {"point": 50.0, "low": 50.0, "high": 50.0}
  assert result["mean"]["med_err"] == {"point": 45.0, "low": 45.0, "high": 45.0}
  assert result["base"]["acc30"] == {"point": 75.0, "low": 75.0, "high": 75.0}
  assert result["novel"]["med_err"] == {"point": 95.0, "low": 95.0, "high": 95.0}


def test_resampled_median_counts_every_view_of_a_drawn_shape():
  # Shapes of one view (10 deg), one view (20 deg) and three views (50 deg), three drawn per
  # resample. The median over the drawn views is 10 or 20 (4/27 of the time each) without the
  # three-view shape, else 50: quartiles 20 and 50. A median of shape medians would give
  # 10 / 20 / 50 with odds 7 / 13 / 7 (quartiles 10 and 20).
  errors = np.array([10.0, 20.0, 50.0, 50.0, 50.0])
  categories = np.array(["a"] * 5)
  shapes = np.array(["s0", "s1", "s2", "s2", "s2"])
  result = intervals.shape_bootstrap(errors, categories, shapes, num_resamples=2000, level=0.5)
  assert result["mean"]["med_err"] == {"point": 50.0, "low": 20.0, "high": 50.0}


def test_a_seed_gives_identical_intervals():
  errors, categories, shapes, novel = _records()
  first = intervals.shape_bootstrap(errors, categories, shapes, novel, seed=3)
  again = intervals.shape_bootstrap(errors, categories, shapes, novel, seed=3)
  other = intervals.shape_bootstrap(errors, categories, shapes, novel, seed=4)
  assert first == again
  assert first["mean"]["acc30"]["low"] != other["mean"]["acc30"]["low"]
  assert first["mean"]["acc30"]["point"] == other["mean"]["acc30"]["point"]


def test_paired_interval_of_a_model_against_itself_is_zero():
  errors, categories, shapes, novel = _records()
  paired = intervals.paired_bootstrap(errors, errors, categories, shapes, novel)
  single = intervals.shape_bootstrap(errors, categories, shapes, novel)
  for group in intervals.GROUPS:
    for metric in intervals.METRICS:
      row = paired[group][metric]
      assert row["diff"] == {"point": 0.0, "low": 0.0, "high": 0.0}
      assert row["share_positive"] == 0.0
      assert row["a"] == row["b"] == single[group][metric]


def test_paired_interval_is_positive_when_a_beats_b_on_every_shape():
  errors_b, categories, shapes, novel = _records()
  # On every shape B misses half its views, A none; A's errors are also lower everywhere.
  errors_b = np.where(np.arange(errors_b.size) % 2 == 0, 60.0, 10.0)
  errors_a = np.full_like(errors_b, 5.0)
  paired = intervals.paired_bootstrap(errors_a, errors_b, categories, shapes, novel)
  for group in intervals.GROUPS:
    acc, med = paired[group]["acc30"], paired[group]["med_err"]
    assert acc["diff"]["point"] == 50.0 and acc["diff"]["low"] > 0.0
    assert acc["share_positive"] == 1.0
    assert med["diff"]["high"] < 0.0 and med["share_positive"] == 0.0
  table = intervals.format_paired(paired, "A vs B")
  assert "A vs B (95% intervals, 1000 resamples of shapes" in table
  assert "[mean]   Acc@30   100.00 [100.00, 100.00]" in table


def test_bootstrap_rejects_bad_inputs():
  errors, categories, shapes, _ = _records()
  with pytest.raises(ValueError, match="one finite error per record: 3 errors"):
    intervals.shape_bootstrap(errors[:3], categories, shapes)
  with pytest.raises(ValueError, match="1 non-finite"):
    intervals.shape_bootstrap(np.where(np.arange(errors.size) == 4, np.nan, errors), categories,
                              shapes)
  with pytest.raises(ValueError, match="one shape id per record"):
    intervals.shape_bootstrap(errors, categories, shapes[:-1])
  with pytest.raises(ValueError, match="level must be in"):
    intervals.shape_bootstrap(errors, categories, shapes, level=95)


def _write_run(workdir, errors, categories, shapes, novel, stage="student", split="test"):
  """A run directory holding only the predictions file of its final evaluation."""
  path = evaluation.predictions_path(evaluation.report_path(str(workdir), stage, split))
  evaluation.write_predictions(
      {"error": errors, "category": categories, "shape_id": shapes,
       "index": np.arange(errors.size), "novel": np.isin(categories, novel),
       "viewpoint": np.zeros((errors.size, 3))}, path)
  return path


def test_predictions_file_round_trip(tmp_path):
  errors, categories, shapes, novel = _records()
  path = _write_run(tmp_path, errors, categories, shapes, novel)
  assert path == str(tmp_path / "eval" / "student_test.npz")
  saved = evaluation.load_predictions(path)
  assert sorted(saved) == ["category", "error", "index", "novel", "shape_id"]
  np.testing.assert_array_equal(saved["shape_id"], shapes)
  np.testing.assert_array_equal(saved["error"], errors)
  assert saved["novel"].sum() == 2 * 5 * 8
  with pytest.raises(FileNotFoundError, match="No predictions file .*missing.npz"):
    evaluation.load_predictions(str(tmp_path / "missing.npz"))


def test_compare_rejects_different_records_naming_both_files(tmp_path):
  errors, categories, shapes, novel = _records()
  path_a = _write_run(tmp_path / "a", errors, categories, shapes, novel)
  other_shapes = shapes.copy()
  other_shapes[7] = "cat0_shape9"
  path_b = _write_run(tmp_path / "b", errors, categories, other_shapes, novel)
  path_c = _write_run(tmp_path / "c", errors[1:], categories[1:], shapes[1:], novel)
  a, b, c = (evaluation.load_predictions(p) for p in (path_a, path_b, path_c))
  with pytest.raises(ValueError, match=re.escape(
      f"{path_a} and {path_b} do not cover the same records (shape_id differs at 1 of 240 records "
      "(first: position 7, 'cat0_shape0' vs 'cat0_shape9'))")):
    evaluation.compare_predictions(a, b, (path_a, path_b))
  with pytest.raises(ValueError, match=re.escape(f"{path_a} and {path_c}") + ".*240 vs 239"):
    evaluation.compare_predictions(a, c, (path_a, path_c))


def test_compare_runs_pairs_the_saved_predictions(tmp_path):
  from kdpose import evaluate

  errors, categories, shapes, novel = _records()
  path_a = _write_run(tmp_path / "a", np.full_like(errors, 5.0), categories, shapes, novel)
  path_b = _write_run(tmp_path / "b", errors, categories, shapes, novel)
  comparison = evaluate.compare_runs(str(tmp_path / "a"), str(tmp_path / "b"), "student", "test")
  assert comparison["files"] == [path_a, path_b]
  paired = comparison["intervals"]
  assert paired["novel"]["acc30"]["a"]["point"] == 100.0
  report = metrics.viewpoint_report(errors, categories, novel_categories=novel)
  assert paired["novel"]["acc30"]["b"]["point"] == pytest.approx(report["novel"]["acc30"])
  assert paired["mean"]["acc30"]["diff"]["low"] > 0.0


def test_compare_command_line_prints_and_writes_the_comparison(tmp_path):
  errors, categories, shapes, novel = _records()
  _write_run(tmp_path / "a", errors, categories, shapes, novel)
  _write_run(tmp_path / "b", errors + 40.0, categories, shapes, novel)
  result = subprocess.run(
      [sys.executable, "-m", "kdpose.evaluate", "--compare", str(tmp_path / "a"),
       str(tmp_path / "b")], cwd=_ROOT, capture_output=True, text=True, check=True,
      env=os.environ | {"JAX_PLATFORMS": "cpu"})
  assert f"student on test: A = {tmp_path / 'a'}, B = {tmp_path / 'b'}" in result.stdout
  assert "[novel]  MedErr" in result.stdout
  with open(tmp_path / "a" / "eval" / "compare_student_test_vs_b.json") as f:
    saved = json.load(f)
  assert saved["intervals"]["mean"]["med_err"]["diff"]["point"] == pytest.approx(-40.0)
  assert saved["intervals"]["mean"]["med_err"]["share_positive"] == 0.0
