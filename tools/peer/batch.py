"""The synthetic host batch both sides of ``tools/benchmark.py --peer`` time (numpy only, so
kdpose's venv, which has no torch, draws the same one)."""

from __future__ import annotations

import numpy as np


def make_batch(batch: int, source_size: int, num_points: int = 1024, seed: int = 0
               ) -> dict[str, np.ndarray]:
  """A random batch of kdpose's host layout: uint8 images ``[B, S, S, 3]``, boxes ``[B, 4]``
  (pixels), viewpoints ``[B, 3]`` (degrees), points ``[B, N, 3]`` (unused by the baseline),
  symmetry ``[B]`` (int32 zeros: no object is symmetric, so kdpose's pose loss is the peer's).
  """
  rng = np.random.default_rng(seed)
  corners = rng.uniform(0.0, 0.3, (batch, 2)) * source_size
  sides = rng.uniform(0.4, 0.7, (batch, 2)) * source_size
  return {
      "image": rng.integers(0, 256, (batch, source_size, source_size, 3), dtype=np.uint8),
      "box": np.concatenate([corners, corners + sides], 1).astype(np.float32),
      "viewpoint": (rng.uniform(0, 1, (batch, 3)) * [360, 180, 360] - [0, 90, 180]).astype(
          np.float32),
      "points": rng.normal(size=(batch, num_points, 3)).astype(np.float32),
      "symmetry": np.zeros(batch, np.int32),
  }
