"""tools/angle_errors.py: the per-angle diagnosis row of hand-made predictions."""

import numpy as np
import pytest

from kdpose import metrics
from tools import angle_errors


def test_row_separates_the_azimuth_from_the_other_angles():
  # chair (base): elevation and in-plane right, azimuth off by 90 and by 10 degrees.
  # bed (novel): azimuth right, elevation off by 40 degrees in one of two samples.
  target = np.array([[0.0, 10.0, 0.0], [100.0, 0.0, 5.0], [30.0, 20.0, 0.0], [60.0, 0.0, 0.0]])
  pred = np.array([[90.0, 10.0, 0.0], [110.0, 0.0, 5.0], [30.0, 60.0, 0.0], [60.0, 0.0, 0.0]])
  predictions = {"viewpoint": pred, "target": target, "error": np.array([90.0, 10.0, 40.0, 0.0]),
                 "category": np.array(["chair", "chair", "bed", "bed"])}
  report = metrics.viewpoint_report(predictions["error"], predictions["category"], ["bed"])
  row = angle_errors.angle_row("run", report, predictions)
  # Acc@30: chair 50, bed 50. Azimuth random: a sample with the other angles right is within 30
  # degrees for 60 of 360 degrees of azimuth (16.7%), the one with elevation off never: chair
  # 16.7, bed 8.3. Azimuth right: chair 100, bed 50. Median |azimuth error| of (90, 10, 0, 0) is
  # 5, of elevation (0, 0, 40, 0) is 0; azimuth within 30: 3 of 4.
  assert row == ("| run | 50.0 | 50.0 | 16.7 | 8.3 | 100.0 | 50.0 | 5° | 0° | 0° | 75.0% |")


def test_row_takes_errors_up_to_each_category_symmetry():
  # chair (none): azimuth off by 90. table (two-fold): off by 170, so 10. bottle (continuous,
  # novel): off by 100, so right. Elevation and in-plane right everywhere.
  target = np.array([[0.0, 10.0, 0.0], [20.0, 0.0, 0.0], [30.0, 20.0, 0.0]])
  pred = np.array([[90.0, 10.0, 0.0], [190.0, 0.0, 0.0], [130.0, 20.0, 0.0]])
  predictions = {"viewpoint": pred, "target": target, "error": np.array([90.0, 10.0, 0.0]),
                 "category": np.array(["chair", "table", "bottle"])}
  report = metrics.viewpoint_report(
      predictions["error"], predictions["category"], ["bottle"],
      category_symmetry={"table": "two_fold", "bottle": "continuous"})
  row = angle_errors.angle_row("run", report, predictions)
  # Acc@30: base (chair 0, table 100) 50, novel 100. Azimuth random: chair 16.7, table 33.3
  # (within 30 degrees of either equivalent azimuth), base 25; bottle always right. Azimuth
  # MedErr and within 30 over chair and table only: errors 90 and 10.
  assert row == "| run | 50.0 | 100.0 | 25.0 | 100.0 | 100.0 | 100.0 | 50° | 0° | 0° | 50.0% |"


def test_swapped_shapes_are_refused_for_a_student(tmp_path):
  from kdpose import evaluate

  with pytest.raises(ValueError, match="swap_shapes needs the teacher"):
    evaluate.evaluate_checkpoint(str(tmp_path), "student", "test", swap_shapes=True)
