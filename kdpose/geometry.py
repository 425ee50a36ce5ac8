"""The viewpoint convention of Pascal3D+/StarMap, shared by every part of kdpose.

A viewpoint is three angles in **degrees**, stacked on the last axis as ``[..., 3]``:
azimuth in [0, 360), elevation in [-90, 90], in-plane rotation (theta) in [-180, 180).

The rotation ``R(a, e, t) = Rz(t) @ Rx(e - 90) @ Rz(-a)`` maps object coordinates (z up, front
facing -y) to camera coordinates (x right, y up in the image, the camera on +z looking at -z).
So azimuth 0 looks at the object's front, azimuth 90 at its right side (+x), elevation > 0 from
above, and a positive in-plane angle turns the image content counter-clockwise.

Every function takes numpy or jax arrays and answers in the same library, so metrics run in
float64 numpy on the host and the training step runs the same code under ``jit``.
"""

from __future__ import annotations

import numpy as np

try:  # geometry is the leaf module; it works without jax for numpy-only callers.
  import jax
  import jax.numpy as jnp
except ImportError:  # pragma: no cover
  jax = jnp = None

DEFAULT_BIN_SIZE = 15.0  # degrees, as in the anchors.
# (start, end) in degrees of each angle's range: azimuth, elevation, in-plane.
ANGLE_RANGES = ((0.0, 360.0), (-90.0, 90.0), (-180.0, 180.0))
ANGLE_NAMES = ("azimuth", "elevation", "inplane")
# Symmetry of an object about its vertical (z) axis, as an int code per sample: none, 2-fold
# (azimuth a and a + 180 look the same) or continuous (every azimuth looks the same).
SYMMETRY_NAMES = ("none", "two_fold", "continuous")
SYMMETRY_NONE, SYMMETRY_TWO_FOLD, SYMMETRY_CONTINUOUS = range(3)


def _xp(*arrays):
  """Returns jax.numpy if any argument is a jax array (or tracer), else numpy."""
  if jnp is not None and any(isinstance(a, jax.Array) for a in arrays):
    return jnp
  return np


def _as_float(values, xp):
  """Floating array: floats keep their dtype, ints become float64 (numpy) or float32 (jax)."""
  values = xp.asarray(values)
  if not xp.issubdtype(values.dtype, xp.floating):
    values = values.astype(np.float64 if xp is np else np.float32)
  return values


def wrap_degrees(angle):
  """Wraps angles (degrees) into [-180, 180)."""
  xp = _xp(angle)
  return xp.mod(_as_float(angle, xp) + 180.0, 360.0) - 180.0


def _rz(angle_rad, xp):
  c, s = xp.cos(angle_rad), xp.sin(angle_rad)
  zero, one = xp.zeros_like(c), xp.ones_like(c)
  return xp.stack(
      [xp.stack([c, -s, zero], -1), xp.stack([s, c, zero], -1), xp.stack([zero, zero, one], -1)],
      -2,
  )


def _rx(angle_rad, xp):
  c, s = xp.cos(angle_rad), xp.sin(angle_rad)
  zero, one = xp.zeros_like(c), xp.ones_like(c)
  return xp.stack(
      [xp.stack([one, zero, zero], -1), xp.stack([zero, c, -s], -1), xp.stack([zero, s, c], -1)],
      -2,
  )


def viewpoint_to_rotation(azimuth, elevation, inplane):
  """Rotation matrices ``[..., 3, 3]`` from angles ``[...]`` in degrees (object -> camera)."""
  xp = _xp(azimuth, elevation, inplane)
  a, e, t = (xp.deg2rad(_as_float(v, xp)) for v in (azimuth, elevation, inplane))
  return _rz(t, xp) @ _rx(e - np.pi / 2, xp) @ _rz(-a, xp)


def rotation_geodesic(rot1, rot2):
  """Geodesic distance in degrees ``[...]`` between rotations ``[..., 3, 3]``.

  Equal to ``arccos((trace(R1^T R2) - 1) / 2)`` with the cosine clamped, but computed as
  ``atan2(sin, cos)`` of the relative rotation so that small angles keep full precision
  (arccos near 1 loses half the digits: identical float32 rotations would read ~0.03 degrees).
  """
  xp = _xp(rot1, rot2)
  rel = xp.swapaxes(rot1, -1, -2) @ rot2
  cos = (xp.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
  skew = rel - xp.swapaxes(rel, -1, -2)
  sin = xp.sqrt(xp.sum(skew**2, axis=(-2, -1)) / 8.0)
  return xp.rad2deg(xp.arctan2(xp.clip(sin, 0.0, 1.0), xp.clip(cos, -1.0, 1.0)))


def rotation_error(pred, gt):
  """Geodesic error in degrees ``[...]`` between viewpoints ``[..., 3]`` (degrees)."""
  rot_pred = viewpoint_to_rotation(pred[..., 0], pred[..., 1], pred[..., 2])
  rot_gt = viewpoint_to_rotation(gt[..., 0], gt[..., 1], gt[..., 2])
  return rotation_geodesic(rot_pred, rot_gt)


def symmetric_rotation_error(pred, gt, symmetry):
  """Geodesic error in degrees ``[...]`` up to each object's symmetry about its vertical axis.

  Turning the object about its own z axis by ``d`` turns ``R_gt`` into ``R_gt @ Rz(-d)`` (the
  ground-truth azimuth plus ``d``). The error is the minimum of ``geodesic(R_pred, R_gt Rz(-d))``
  over the offsets ``d`` the symmetry allows: {0} for none, {0, 180} for two-fold, every ``d``
  for continuous. With ``M = R_pred^T R_gt``, ``trace(M Rz(-d)) = (M00 + M11) cos d +
  (M10 - M01) sin d + M22``, so the best two-fold offset is 180 where ``M00 + M11 < 0`` and the
  best continuous one ``atan2(M10 - M01, M00 + M11)``; the error is then the geodesic to that
  turned rotation (full precision near 0, unlike the arccos of the maximal trace).

  Args:
    pred: predicted viewpoints ``[..., 3]`` in degrees.
    gt: ground-truth viewpoints ``[..., 3]`` in degrees.
    symmetry: int codes ``[...]`` (``SYMMETRY_NAMES``), broadcast against ``pred[..., 0]``.
  """
  xp = _xp(pred, gt, symmetry)
  rot_pred = viewpoint_to_rotation(pred[..., 0], pred[..., 1], pred[..., 2])
  rot_gt = viewpoint_to_rotation(gt[..., 0], gt[..., 1], gt[..., 2])
  rel = xp.swapaxes(rot_pred, -1, -2) @ rot_gt
  cos_part = rel[..., 0, 0] + rel[..., 1, 1]
  sin_part = rel[..., 1, 0] - rel[..., 0, 1]
  symmetry = xp.asarray(symmetry)
  offset = xp.where(symmetry == SYMMETRY_CONTINUOUS, xp.arctan2(sin_part, cos_part),
                    xp.where((symmetry == SYMMETRY_TWO_FOLD) & (cos_part < 0), np.pi, 0.0))
  return rotation_geodesic(rot_pred, rot_gt @ _rz(-offset.astype(rel.dtype), xp))


def canonical_viewpoint(viewpoint):
  """Maps ``[..., 3]`` angles (degrees) into the canonical ranges, elevation clipped."""
  xp = _xp(viewpoint)
  return xp.stack(
      [xp.mod(viewpoint[..., 0], 360.0),
       xp.clip(viewpoint[..., 1], -90.0, 90.0),
       wrap_degrees(viewpoint[..., 2])], -1)


def flip_viewpoint(viewpoint):
  """Label of the horizontally mirrored image: a -> (360 - a) mod 360, e -> e, t -> -t."""
  xp = _xp(viewpoint)
  return xp.stack(
      [xp.mod(360.0 - viewpoint[..., 0], 360.0), viewpoint[..., 1],
       wrap_degrees(-viewpoint[..., 2])], -1)


def rotate_inplane(viewpoint, angle):
  """Label after turning the image content counter-clockwise by ``angle`` degrees ``[...]``."""
  xp = _xp(viewpoint, angle)
  return xp.stack(
      [viewpoint[..., 0], viewpoint[..., 1], wrap_degrees(viewpoint[..., 2] + angle)], -1)


def num_bins(bin_size: float = DEFAULT_BIN_SIZE) -> tuple[int, int, int]:
  """Number of bins of azimuth, elevation, in-plane: (24, 12, 24) for 15 degree bins."""
  counts = tuple(int(round((end - start) / bin_size)) for start, end in ANGLE_RANGES)
  for (start, end), count in zip(ANGLE_RANGES, counts, strict=True):
    if not np.isclose(count * bin_size, end - start):
      raise ValueError(f"bin_size={bin_size} does not divide the angle range [{start}, {end}].")
  return counts


def encode_viewpoint(viewpoint, bin_size: float = DEFAULT_BIN_SIZE):
  """Encodes ``[..., 3]`` angles (degrees) as bins ``[..., 3]`` (int32) and offsets ``[..., 3]``.

  The offset is the position inside the bin, in [-0.5, 0.5]: ``(angle - bin_start) / size - 0.5``.
  Elevation 90 falls in the last bin with offset 0.5.
  """
  xp = _xp(viewpoint)
  viewpoint = canonical_viewpoint(viewpoint)
  starts = xp.asarray([r[0] for r in ANGLE_RANGES], dtype=viewpoint.dtype)
  counts = xp.asarray(num_bins(bin_size))
  in_range = viewpoint - starts
  bins = xp.clip(xp.floor(in_range / bin_size).astype(np.int32), 0, counts - 1)
  offsets = in_range / bin_size - bins - 0.5
  return bins, offsets


def decode_viewpoint(bins, offsets, bin_size: float = DEFAULT_BIN_SIZE):
  """Inverse of ``encode_viewpoint``: bins ``[..., 3]`` and offsets ``[..., 3]`` -> degrees."""
  xp = _xp(bins, offsets)
  starts = xp.asarray([r[0] for r in ANGLE_RANGES], dtype=xp.result_type(offsets, np.float32))
  return canonical_viewpoint((bins + 0.5 + offsets) * bin_size + starts)
