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


def test_swapped_shapes_are_refused_for_a_student(tmp_path):
  from kdpose import evaluate

  with pytest.raises(ValueError, match="swap_shapes needs the teacher"):
    evaluate.evaluate_checkpoint(str(tmp_path), "student", "test", swap_shapes=True)
