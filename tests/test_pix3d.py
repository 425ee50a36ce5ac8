"""Pix3D: the viewpoint derived from cam_position / inplane_rotation, frames, and the builder."""

import math

import numpy as np
import pytest
import raw_fixtures as rf
import trimesh

from kdpose import geometry
from kdpose.data import cad_points, pix3d


def _kdpose_rotation(rot_mat):
  """Pix3D's object->camera rotation expressed between kdpose's object and camera frames."""
  return pix3d.PIX3D_TO_CAMERA_FRAME @ np.asarray(rot_mat) @ pix3d.PIX3D_TO_OBJECT_FRAME.T


def test_derived_viewpoint_reproduces_the_look_at_rot_mat():
  rng = np.random.default_rng(0)
  for _ in range(500):
    cam = rng.normal(size=3) * rng.uniform(0.5, 5.0)
    inplane = rng.uniform(-np.pi, np.pi)
    rot_mat, _ = rf.pix3d_camera(cam, inplane)
    viewpoint = pix3d.viewpoint_from_camera(cam, inplane)
    error = geometry.rotation_geodesic(geometry.viewpoint_to_rotation(*viewpoint),
                                       _kdpose_rotation(rot_mat))
    assert error < 1e-5, (cam, inplane, viewpoint)


@pytest.mark.parametrize("cam, inplane, expected", [
    ((0.0, 0.0, -2.0), 0.0, (0.0, 0.0, 0.0)),  # in front of the model (front faces -z).
    ((-3.0, 0.0, 0.0), 0.0, (90.0, 0.0, 0.0)),  # viewer's right from the front is Pix3D -x.
    ((0.0, 0.0, 1.5), 0.0, (180.0, 0.0, 0.0)),  # from behind.
    ((0.0, 1.0, -1.0), 0.0, (0.0, 45.0, 0.0)),  # from above the front.
    ((0.0, 0.0, -2.0), 0.5, (0.0, 0.0, -math.degrees(0.5))),  # clockwise in Pix3D.
])
def test_hand_computed_viewpoints(cam, inplane, expected):
  viewpoint = pix3d.viewpoint_from_camera(cam, inplane)
  np.testing.assert_allclose(geometry.canonical_viewpoint(viewpoint), expected, atol=1e-9)


def test_identity_rot_mat_is_the_front_view():
  # rot_mat = I: the camera looks along the model's +z, i.e. at its front (-z) face.
  np.testing.assert_allclose(_kdpose_rotation(np.eye(3)),
                             geometry.viewpoint_to_rotation(0.0, 0.0, 0.0), atol=1e-12)


def _posecontrast_viewpoint(cam_position, inplane_rotation):
  """The label PoseContrast (the anchor whose Pix3D numbers kdpose compares with) makes of a
  pix3d.json record, written out from its data/Pix3D/create_annotation.py (github.com/
  YoungXIAO13/PoseContrast): elevation atan(y / sqrt(x^2 + z^2)); with x negated, azimuth
  atan(x / z) put in its quadrant (90 or 270 at z = 0), then 360 minus it; in-plane minus
  inplane_rotation in degrees."""
  x, y, z = (float(v) for v in cam_position)
  elevation = math.degrees(math.atan(y / math.sqrt(x**2 + z**2)))
  x = -x
  if z == 0.0:
    azimuth = 90.0 if x <= 0 else 270.0
  else:
    azimuth = math.degrees(math.atan(x / z))
    if x > 0 and z < 0:
      azimuth += 360.0
    elif not (x <= 0 and z < 0):
      azimuth += 180.0
  return np.array([(360.0 - azimuth) % 360.0, elevation, -math.degrees(inplane_rotation)])


def _assert_same_angles(got, want):
  """Equal viewpoints, each angle compared on the circle."""
  difference = (np.asarray(got, np.float64) - np.asarray(want, np.float64) + 180.0) % 360.0 - 180.0
  np.testing.assert_allclose(difference, 0.0, atol=1e-4)


def test_viewpoint_from_camera_gives_the_anchors_pix3d_labels():
  rng = np.random.default_rng(1)
  cams = [rng.normal(size=3) * rng.uniform(0.5, 5.0) for _ in range(300)]
  cams += [(1.5, 0.3, 0.0), (-1.5, 0.3, 0.0), (0.0, 0.5, -2.0), (0.0, 0.5, 2.0)]  # axis cases
  for cam in cams:
    inplane = rng.uniform(-np.pi, np.pi)
    _assert_same_angles(pix3d.viewpoint_from_camera(cam, inplane),
                        _posecontrast_viewpoint(cam, inplane))


def test_model_frame_goes_to_z_up_front_minus_y():
  frame = pix3d.PIX3D_TO_OBJECT_FRAME
  np.testing.assert_allclose(frame @ [0, 1, 0], [0, 0, 1])  # up.
  np.testing.assert_allclose(frame @ [0, 0, -1], [0, -1, 0])  # front.
  np.testing.assert_allclose(frame @ [1, 0, 0], [-1, 0, 0])  # viewer's left from the front.
  assert np.isclose(np.linalg.det(frame), 1.0)


def test_model_points_put_the_front_bump_at_minus_y():
  vertices, faces = rf.box_mesh((0.5, 1.0, 0.4), bump=(0.0, 0.0, -0.3))  # tall, bump in front.
  points = cad_points.model_points(trimesh.Trimesh(vertices, faces), 3000, 0,
                                   pix3d.PIX3D_TO_OBJECT_FRAME).astype(np.float64)
  extent = np.ptp(points, axis=0)
  assert extent[2] > 1.5 * max(extent[0], extent[1])  # tallest along kdpose z.
  front = points[points[:, 1] < points[:, 1].min() + 0.02]
  back = points[points[:, 1] > points[:, 1].max() - 0.02]
  # The bump is 0.2 wide, the box 0.5 x 1.0 (raw units; the unit sphere scales by ~1.6).
  assert len(front) > 10 and np.abs(front[:, [0, 2]]).max() < 0.2  # only the small bump.
  assert np.abs(back[:, 2]).max() > 0.6  # the whole back face.


def test_camera_disagreement():
  rot, trans = rf.pix3d_camera((1.0, 0.5, -2.0), 0.4)
  record = {"rot_mat": rot.tolist(), "trans_mat": trans.tolist(), "cam_position": [2.0, 1.0, -4.0]}
  assert pix3d.camera_disagreement(record) < 1e-6  # same direction, other distance.
  record["cam_position"] = [-2.0, -1.0, 4.0]
  assert pix3d.camera_disagreement(record) == pytest.approx(180.0)
  record["cam_position"] = [0.0, 0.0, 0.0]
  assert math.isnan(pix3d.camera_disagreement(record))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("pix3d")


@pytest.fixture(scope="module")
def built(root):
  builder, splits = rf.build_fixture(root, rf.make_pix3d, pix3d.Pix3D, ("test",))
  return builder, splits["test"]


def test_builder_values(built):
  builder, examples = built
  assert list(builder.info.splits) == ["test"]
  assert sorted(examples) == ["img/bed/0002.png", "img/chair/0001.png"]
  names = builder.info.features["category"].names
  chair = examples["img/chair/0001.png"]
  assert names[chair["category"]] == "chair"
  # Camera (0.6, 0.7, -2.0), in-plane 0.2 rad.
  np.testing.assert_allclose(chair["viewpoint"], [
      360 - math.degrees(math.atan2(0.6, 2.0)), math.degrees(math.atan2(0.7, math.hypot(0.6, 2))),
      -math.degrees(0.2)], atol=1e-4)
  # Box (10, 20, 50, 70) in 60x80, 30% context: crop x 0..60, y 5..80 -> 60x75 -> 51x64.
  assert chair["image"].shape == (64, 51, 3)
  np.testing.assert_allclose(chair["bbox"], [15 / 75, 10 / 60, 65 / 75, 50 / 60], atol=1e-6)
  assert (chair["truncated"], chair["occluded"], chair["difficult"]) == (False, False, False)
  bed = examples["img/bed/0002.png"]
  np.testing.assert_allclose(bed["viewpoint"][:2], [
      math.degrees(math.atan2(1.5, -1.2)), math.degrees(math.atan2(0.3, math.hypot(1.5, 1.2)))],
      atol=1e-4)
  assert bed["truncated"] and bed["occluded"]  # slightly_occluded counts as occluded.
  # A 16-bit grayscale PNG: blue background (luminance 29), red box (76) scaled down, not clipped.
  luminance = bed["image"].astype(float).mean(axis=-1)
  height, width = luminance.shape
  ymin, xmin, ymax, xmax = bed["bbox"] * [height, width, height, width]
  assert abs(luminance[int(ymin) + 2:int(ymax) - 1, int(xmin) + 2:int(xmax) - 1].mean() - 76) < 8
  assert abs(luminance[:int(ymin) - 1].mean() - 29) < 8
  extent = np.ptp(chair["points"].astype(np.float64), axis=0)
  assert extent[2] == extent.max()  # the tall chair stands along kdpose z.


def test_builder_labels_are_the_anchors_labels_of_the_records(built, root):
  import json

  _, examples = built
  with open(root / "raw" / "pix3d.json") as f:
    records = {r["img"]: r for r in json.load(f)}
  assert len(examples) == 2
  for name, example in examples.items():
    record = records[name]
    # Both in-plane signs occur (0.2 and -0.1 rad), and the azimuths are far from 0 and 180.
    _assert_same_angles(example["viewpoint"],
                        _posecontrast_viewpoint(record["cam_position"], record["inplane_rotation"]))


def test_builder_skips(built):
  builder, _ = built
  log = builder.skip_logs["test"]
  assert log.skipped == {"missing CAD model": 1, "missing image": 1, "duplicate example": 1,
                         "cam_position disagrees with rot_mat/trans_mat": 1,
                         "malformed record": 1}
  assert log.dropped == {"category not in the dataset": 1}


def test_pix3d_json_that_is_not_a_list_of_records_fails_naming_it(tmp_path):
  raw = tmp_path / "raw"
  rf.make_pix3d(str(raw))
  rf.write_pix3d_json(str(raw / "pix3d.json"), {"img": "img/chair/0001.png"})  # one record, bare
  with pytest.raises(ValueError, match=r"raw/pix3d.json holds a dict, expected a list"):
    rf.build(pix3d.Pix3D, str(tmp_path / "data"), str(raw))
