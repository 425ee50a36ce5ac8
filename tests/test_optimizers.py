"""Learning-rate schedules at their boundaries, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ml_collections import ConfigDict

from kdpose import optimizers


def _schedule(num_steps, **fields):
  config = ConfigDict(dict(learning_rate=0.1, warmup_steps=10, schedule="cosine",
                           decay_at=(0.5,), decay_factor=0.1))
  config.update(fields)
  return optimizers.learning_rate_schedule(config, num_steps)


def _values(schedule, steps):
  return np.array([float(schedule(step)) for step in steps])


def test_cosine_warms_up_linearly_then_decays_to_zero_at_the_last_step():
  schedule = _schedule(110)
  # Warm-up 0 -> 0.1 over 10 steps, then 0.05 * (1 + cos(pi * t / 100)) for t = step - 10.
  steps = [0, 5, 9, 10, 35, 60, 85, 110, 200]
  expected = [0.0, 0.05, 0.09, 0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05,
              0.05 * (1 + math.cos(3 * math.pi / 4)), 0.0, 0.0]
  np.testing.assert_allclose(_values(schedule, steps), expected, atol=1e-7)


def test_cosine_without_warm_up_starts_at_the_full_rate():
  schedule = _schedule(100, warmup_steps=0)
  np.testing.assert_allclose(_values(schedule, [0, 50, 100]), [0.1, 0.05, 0.0], atol=1e-7)


def test_warm_up_longer_than_training_ends_one_step_before_the_end():
  # 5 steps, warm-up 10 -> 4: 0, 0.025, 0.05, 0.075, then the cosine over the 1 step left.
  np.testing.assert_allclose(_values(_schedule(5), range(5)), [0.0, 0.025, 0.05, 0.075, 0.1],
                             atol=1e-7)


def test_step_decay_multiplies_at_each_fraction_of_training():
  schedule = _schedule(100, schedule="step", decay_at=(0.5, 0.8))
  # Boundaries 50 and 80 counted after the 10 warm-up steps: at steps 50 and 80.
  steps = [5, 10, 49, 50, 79, 80, 99]
  expected = [0.05, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
  np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-6)


def test_constant_and_unknown_schedules():
  np.testing.assert_allclose(_values(_schedule(100, schedule="constant", warmup_steps=0),
                                     [0, 99]), [0.1, 0.1])
  with pytest.raises(ValueError, match="'linear'.*cosine, step, constant"):
    _schedule(100, schedule="linear")
