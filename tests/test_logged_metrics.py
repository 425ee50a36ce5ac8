"""The scalars the training loop logs for a run of steps (``loop.logged_means``)."""

import numpy as np
import pytest

from kdpose.trainers import loop


def test_means_leave_out_the_steps_whose_update_was_skipped():
  steps = [{"loss": 1.0, "kd/ckd": 0.5, "skipped_updates": 0.0},
           {"loss": 100.0, "kd/ckd": 9.0, "skipped_updates": 1.0},
           {"loss": 5.0, "kd/ckd": 1.5, "skipped_updates": 0.0}]
  # (1 + 5) / 2 and (0.5 + 1.5) / 2: the skipped step's values count nowhere but in the count.
  assert loop.logged_means(steps) == {"train/loss": 3.0, "kd/ckd": 1.0,
                                      "train/skipped_updates": 1.0}


def test_when_every_update_was_skipped_the_means_are_over_all_steps():
  steps = [{"loss": 2.0, "skipped_updates": 1.0}, {"loss": 4.0, "skipped_updates": 1.0}]
  assert loop.logged_means(steps) == {"train/loss": 3.0, "train/skipped_updates": 2.0}


def test_steps_without_skip_counts_are_plain_means():
  steps = [{"loss": np.float32(0.25), "accuracy": 1.0}, {"loss": np.float32(0.75), "accuracy": 0.0}]
  means = loop.logged_means(steps)
  assert means == pytest.approx({"train/loss": 0.5, "train/accuracy": 0.5})
  assert set(means) == {"train/loss", "train/accuracy"}
