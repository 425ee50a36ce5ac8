"""Acc@30 and MedErr per category, base vs novel."""

import numpy as np
import pytest

from kdpose import metrics


def test_report_by_hand():
  errors = [10.0, 40.0, 20.0, 5.0, 100.0, 31.0]
  cats = ["chair", "chair", "chair", "bed", "bed", "bed"]
  report = metrics.viewpoint_report(errors, cats, novel_categories=["bed"])
  chair, bed = report["per_category"]["chair"], report["per_category"]["bed"]
  assert chair["acc30"] == pytest.approx(200 / 3) and chair["med_err"] == 20.0
  assert bed["acc30"] == pytest.approx(100 / 3) and bed["med_err"] == 31.0
  assert bed["novel"] and not chair["novel"]
  assert report["mean"]["acc30"] == pytest.approx(50.0)
  assert report["mean"]["med_err"] == pytest.approx(25.5)
  assert report["pooled"]["acc30"] == pytest.approx(50.0)
  assert report["pooled"]["med_err"] == pytest.approx(25.5)  # median of 6 values: (20 + 31) / 2
  assert report["base"]["acc30"] == pytest.approx(200 / 3)
  assert report["novel"]["med_err"] == 31.0
  assert "chair" in metrics.format_report(report)


def test_category_mean_differs_from_pooled():
  errors = [0.0] * 9 + [90.0]
  cats = ["a"] * 9 + ["b"]
  report = metrics.viewpoint_report(errors, cats)
  assert report["pooled"]["acc30"] == pytest.approx(90.0)
  assert report["mean"]["acc30"] == pytest.approx(50.0)
  assert np.isnan(report["novel"]["acc30"]) and report["novel"]["num_categories"] == 0
  assert metrics.viewpoint_report([30.0], ["a"])["pooled"]["acc30"] == 100.0  # <= 30 counts


def test_bad_input():
  with pytest.raises(ValueError, match="2 errors but 1"):
    metrics.viewpoint_report([1.0, 2.0], ["a"])
  with pytest.raises(ValueError, match="non-finite"):
    metrics.viewpoint_report([np.nan], ["a"])


def test_angle_errors_by_hand():
  pred = np.array([[350.0, 10.0, 170.0], [90.0, -20.0, -10.0]])
  target = np.array([[10.0, -5.0, -170.0], [270.0, 30.0, 5.0]])
  np.testing.assert_allclose(metrics.angle_errors(pred, target),
                             [[20.0, 15.0, 20.0], [180.0, 50.0, 15.0]])


def test_report_lists_symmetric_categories_apart():
  errors = [10.0, 50.0, 20.0, 40.0, 0.0, 5.0]
  cats = ["chair", "chair", "table", "table", "bottle", "bottle"]
  symmetry = metrics.symmetry_by_name(["bottle", "chair", "table"], np.array([2, 0, 1]))
  assert symmetry == {"bottle": "continuous", "chair": "none", "table": "two_fold"}
  report = metrics.viewpoint_report(errors, cats, novel_categories=["table"],
                                    category_symmetry=symmetry)
  rows = report["per_category"]
  assert [rows[n]["symmetry"] for n in ("bottle", "chair", "table")] == [
      "continuous", "none", "two_fold"]
  # Acc@30: chair 50, table 50, bottle 100; MedErr: chair 30, table 30, bottle 2.5.
  assert report["symmetric"] == {"acc30": 75.0, "med_err": 16.25, "num_categories": 2}
  assert report["asymmetric"] == {"acc30": 50.0, "med_err": 30.0, "num_categories": 1}
  assert report["mean"]["acc30"] == pytest.approx(200 / 3)  # the headline includes them
  assert report["novel"]["num_categories"] == 1 and report["base"]["num_categories"] == 2
  text = metrics.format_report(report)
  assert "bottle (sym inf) " in text and "table (novel) (sym 2) " in text
  assert "chair " in text and "chair (" not in text
  assert "[symmetric]" in text and "[asymmetric]" in text
  plain = metrics.viewpoint_report(errors, cats)
  assert {row["symmetry"] for row in plain["per_category"].values()} == {"none"}
  assert plain["symmetric"]["num_categories"] == 0 and plain["asymmetric"] == plain["mean"]
  assert "sym" not in metrics.format_report(plain)
  with pytest.raises(ValueError, match="category_symmetry of \\['chair'\\]"):
    metrics.viewpoint_report(errors, cats, category_symmetry={"chair": "three_fold"})


def test_angle_errors_up_to_symmetry():
  pred = np.tile([[180.0, 10.0, 5.0]], (3, 1))
  target = np.tile([[10.0, 0.0, -5.0]], (3, 1))
  errors = metrics.angle_errors(pred, target, np.array([0, 1, 2]))
  np.testing.assert_allclose(errors, [[170.0, 10.0, 10.0], [10.0, 10.0, 10.0],
                                      [np.nan, 10.0, 10.0]])
  np.testing.assert_array_equal(metrics.angle_errors(pred, target), errors[[0, 0, 0]])


def test_report_scalars_carry_the_symmetric_groups_and_skip_empty_ones():
  from kdpose.trainers import evaluation

  errors, cats = [10.0, 50.0, 0.0, 5.0], ["chair", "chair", "bottle", "bottle"]
  symmetry = {"bottle": "continuous", "chair": "none"}
  report = metrics.viewpoint_report(errors, cats, category_symmetry=symmetry)
  scalars = evaluation.report_scalars(report, "eval/test")
  assert scalars["eval/test/symmetric/acc30"] == 100.0  # bottle: both within 30.
  assert scalars["eval/test/asymmetric/med_err"] == 30.0  # chair: median of 10 and 50.
  assert "eval/test/novel/acc30" not in scalars  # no novel category: NaN, left out.
  plain = evaluation.report_scalars(metrics.viewpoint_report(errors, cats), "eval/test")
  assert "eval/test/symmetric/acc30" not in plain and "eval/test/asymmetric/acc30" in plain
