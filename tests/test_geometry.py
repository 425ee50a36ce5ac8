"""The viewpoint convention: rotations, errors, bins, label rules."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdpose import geometry

azimuths = st.floats(0.0, 359.99)
elevations = st.floats(-90.0, 90.0)
inplanes = st.floats(-180.0, 179.99)


def test_front_view_maps_object_axes_to_camera_axes():
  rot = geometry.viewpoint_to_rotation(0.0, 0.0, 0.0)
  # Object x (right) -> image right, object z (up) -> image up, front (-y) -> towards the camera.
  np.testing.assert_allclose(rot @ [1, 0, 0], [1, 0, 0], atol=1e-12)
  np.testing.assert_allclose(rot @ [0, 0, 1], [0, 1, 0], atol=1e-12)
  np.testing.assert_allclose(rot @ [0, -1, 0], [0, 0, 1], atol=1e-12)


def test_azimuth_90_sees_the_right_side_and_elevation_looks_from_above():
  rot = geometry.viewpoint_to_rotation(90.0, 0.0, 0.0)
  np.testing.assert_allclose(rot @ [1, 0, 0], [0, 0, 1], atol=1e-12)  # +x faces the camera.
  rot = geometry.viewpoint_to_rotation(0.0, 90.0, 0.0)
  np.testing.assert_allclose(rot @ [0, 0, 1], [0, 0, 1], atol=1e-12)  # top faces the camera.
  np.testing.assert_allclose(rot @ [0, 1, 0], [0, 1, 0], atol=1e-12)  # back is image-up.


def test_positive_inplane_turns_content_counter_clockwise():
  rot = geometry.viewpoint_to_rotation(0.0, 0.0, 90.0)
  # Object right (image right at t=0) now points image-up: a counter-clockwise quarter turn.
  np.testing.assert_allclose(rot @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_known_errors():
  vp = np.array([30.0, 10.0, -5.0])
  assert geometry.rotation_error(vp, vp) == pytest.approx(0.0, abs=1e-6)
  assert geometry.rotation_error(vp, vp + [0, 0, 25.0]) == pytest.approx(25.0, abs=1e-9)
  front, back = np.array([0, 0, 0.0]), np.array([180, 0, 0.0])
  assert geometry.rotation_error(front, back) == pytest.approx(180)
  # At elevation 0 an azimuth change is a pure rotation about the object's up axis.
  a10, a50 = np.array([10, 0, 0.0]), np.array([50, 0, 0.0])
  assert geometry.rotation_error(a10, a50) == pytest.approx(40)


def test_float32_jax_identity_error_is_tiny():
  vp = jnp.asarray([[123.0, 45.0, 67.0], [0.0, -90.0, 179.0]], jnp.float32)
  err = geometry.rotation_error(vp, vp)
  assert err.dtype == jnp.float32
  np.testing.assert_array_less(np.asarray(err), 1e-3)


@settings(max_examples=60, deadline=None)
@given(a=azimuths, e=elevations, t=inplanes, a2=azimuths, e2=elevations, t2=inplanes)
def test_error_is_symmetric_bounded_and_matches_arccos(a, e, t, a2, e2, t2):
  p, q = np.array([a, e, t]), np.array([a2, e2, t2])
  err = geometry.rotation_error(p, q)
  assert err == pytest.approx(geometry.rotation_error(q, p), abs=1e-7)
  assert 0.0 <= err <= 180.0 + 1e-9
  r1 = geometry.viewpoint_to_rotation(a, e, t)
  r2 = geometry.viewpoint_to_rotation(a2, e2, t2)
  np.testing.assert_allclose(r1 @ r1.T, np.eye(3), atol=1e-12)
  cos = np.clip((np.trace(r1.T @ r2) - 1) / 2, -1, 1)
  assert err == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-4)


@settings(max_examples=100, deadline=None)
@given(vp=hnp.arrays(np.float64, (5, 3), elements=st.floats(-720, 720)))
def test_bin_round_trip(vp):
  vp = geometry.canonical_viewpoint(vp)
  bins, offsets = geometry.encode_viewpoint(vp)
  assert np.all(bins >= 0) and np.all(bins < np.array([24, 12, 24]))
  assert np.all(offsets >= -0.5 - 1e-9) and np.all(offsets <= 0.5 + 1e-9)
  decoded = geometry.decode_viewpoint(bins, offsets)
  np.testing.assert_allclose(geometry.rotation_error(decoded, vp), 0.0, atol=1e-5)


def test_bin_edges():
  bins, offsets = geometry.encode_viewpoint(np.array([[0.0, 90.0, -180.0], [359.0, -90.0, 7.5]]))
  np.testing.assert_array_equal(bins, [[0, 11, 0], [23, 0, 12]])
  np.testing.assert_allclose(offsets, [[-0.5, 0.5, -0.5], [14 / 15 - 0.5, -0.5, 0.0]])
  assert geometry.num_bins(30.0) == (12, 6, 12)
  with pytest.raises(ValueError, match="does not divide"):
    geometry.num_bins(7.0)


@settings(max_examples=60, deadline=None)
@given(a=azimuths, e=elevations, t=inplanes, r=st.floats(-90, 90))
def test_flip_twice_is_identity_and_rotation_adds(a, e, t, r):
  vp = np.array([a, e, t])
  twice = geometry.flip_viewpoint(geometry.flip_viewpoint(vp))
  assert geometry.rotation_error(twice, vp) == pytest.approx(0.0, abs=1e-5)
  rotated = geometry.rotate_inplane(vp, r)
  assert geometry.rotation_error(rotated, vp) == pytest.approx(abs(r), abs=1e-5)
  assert -180.0 <= rotated[2] < 180.0


def _project(points, vp):
  """Orthographic image coordinates (u right, v up) of object points ``[n, 3]``."""
  rot = geometry.viewpoint_to_rotation(*vp)
  return (points @ rot.T)[:, :2]


def test_flip_rule_matches_mirrored_projection():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(50, 3))
  for vp in ([30.0, 20.0, 10.0], [250.0, -40.0, -120.0]):
    flipped_image = _project(points, vp) * [-1, 1]
    mirrored = points * [-1, 1, 1]  # The mirror image of the object, seen at the flipped label.
    np.testing.assert_allclose(_project(mirrored, geometry.flip_viewpoint(np.array(vp))),
                               flipped_image, atol=1e-9)


def test_inplane_rule_matches_rotated_projection():
  rng = np.random.default_rng(1)
  points = rng.normal(size=(50, 3))
  vp, r = np.array([70.0, 15.0, 5.0]), 40.0
  c, s = np.cos(np.radians(r)), np.sin(np.radians(r))
  turned = _project(points, vp) @ np.array([[c, -s], [s, c]]).T  # counter-clockwise by r
  np.testing.assert_allclose(_project(points, geometry.rotate_inplane(vp, r)), turned, atol=1e-9)


def test_symmetric_error_forgives_only_turns_about_the_vertical_axis():
  gt = np.array([40.0, 0.0, 10.0])
  codes = np.array([geometry.SYMMETRY_NONE, geometry.SYMMETRY_TWO_FOLD,
                    geometry.SYMMETRY_CONTINUOUS])
  error = lambda pred: geometry.symmetric_rotation_error(np.tile(pred, (3, 1)), np.tile(gt, (3, 1)),
                                                         codes)
  np.testing.assert_allclose(error([220.0, 0.0, 10.0]), [180.0, 0.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(error([130.0, 0.0, 10.0]), [90.0, 90.0, 0.0], atol=1e-6)
  # At elevation 0 the camera's x axis is perpendicular to the object's vertical, so an
  # elevation error of 20 stays 20 whatever turn about the vertical is allowed.
  turned_and_raised = np.array([220.0, 20.0, 10.0])
  np.testing.assert_allclose(error(turned_and_raised),
                             [geometry.rotation_error(turned_and_raised, gt), 20.0, 20.0],
                             atol=1e-6)
  assert geometry.rotation_error(turned_and_raised, gt) > 170.0


def _random_viewpoints(rng, n):
  return np.stack([rng.uniform(0, 360, n), rng.uniform(-90, 90, n), rng.uniform(-180, 180, n)],
                  -1)


def test_symmetric_error_is_the_minimum_over_equivalent_azimuths():
  rng = np.random.default_rng(2)
  pred, gt = _random_viewpoints(rng, 100), _random_viewpoints(rng, 100)
  offsets = np.arange(3600) / 10.0  # every tenth of a degree
  turned = gt[:, None, :] + np.stack([offsets, 0 * offsets, 0 * offsets], -1)
  brute = geometry.rotation_error(pred[:, None, :], turned).min(axis=1)
  continuous = geometry.symmetric_rotation_error(pred, gt, geometry.SYMMETRY_CONTINUOUS)
  np.testing.assert_allclose(continuous, brute, atol=1e-3)
  assert np.all(continuous <= brute + 1e-9)  # the closed form is the exact minimum
  two_fold = geometry.symmetric_rotation_error(pred, gt, geometry.SYMMETRY_TWO_FOLD)
  np.testing.assert_allclose(two_fold, np.minimum(
      geometry.rotation_error(pred, gt), geometry.rotation_error(pred, gt + [180.0, 0.0, 0.0])),
      atol=1e-9)
  np.testing.assert_array_equal(geometry.symmetric_rotation_error(pred, gt, geometry.SYMMETRY_NONE),
                                geometry.rotation_error(pred, gt))


def test_symmetric_error_under_jit_matches_numpy():
  rng = np.random.default_rng(3)
  pred, gt = _random_viewpoints(rng, 64), _random_viewpoints(rng, 64)
  gt[:4, 1] = [90.0, -90.0, 0.0, 45.0]  # at the poles and off them, turns about the vertical
  pred[:4] = gt[:4] + [90.0, 0.0, 0.0]
  codes = rng.integers(0, 3, 64).astype(np.int32)
  got = jax.jit(geometry.symmetric_rotation_error)(
      jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32), jnp.asarray(codes))
  assert got.dtype == jnp.float32 and got.shape == (64,)
  np.testing.assert_allclose(np.asarray(got), geometry.symmetric_rotation_error(pred, gt, codes),
                             atol=2e-3)
  same = jnp.asarray(gt, jnp.float32)  # float32 identities stay far below arccos's 0.03 degrees
  identity = geometry.symmetric_rotation_error(same, same, jnp.full(64, 2))
  np.testing.assert_array_less(np.asarray(identity), 1e-3)
