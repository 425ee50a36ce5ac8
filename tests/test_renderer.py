"""The renderer follows the kdpose viewpoint convention (geometry.py), checked on primitives."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from kdpose import geometry
from kdpose.data import primitive_shapes
from kdpose.data import renderer as renderer_lib
from kdpose.data.renderer import Lighting, MeshPart, Renderer, TexturedMesh, centered_window

SIZE, FOV, DISTANCE = 64, 40.0, 3.0
FLAT = Lighting(direction=(0.0, 0.0, 1.0), ambient=1.0, diffuse=0.0, specular=0.0)


@pytest.fixture(scope="module")
def renderer():
  with Renderer(SIZE) as r:
    yield r


def _reference_silhouette(mesh: TexturedMesh, viewpoint, size: int, scale: int = 4) -> np.ndarray:
  """The mesh's triangles projected with viewpoint_to_rotation (pinhole, the renderer's fov),
  filled at ``scale`` times the size and box-filtered, so edges land within a fraction of a
  pixel."""
  rot = np.asarray(geometry.viewpoint_to_rotation(*viewpoint), np.float64)
  half = np.tan(np.deg2rad(FOV) / 2)
  canvas = Image.new("L", (size * scale, size * scale))
  draw = ImageDraw.Draw(canvas)
  for part in mesh.parts:
    cam = part.vertices.astype(np.float64) @ rot.T - [0.0, 0.0, DISTANCE]
    uv = cam[:, :2] / -cam[:, 2:3]  # x right, y up.
    px = np.stack([(uv[:, 0] + half) / (2 * half), (half - uv[:, 1]) / (2 * half)], 1)
    px = px * size * scale - 0.5  # PIL puts pixel centres on integer coordinates.
    for face in part.faces:
      draw.polygon([tuple(p) for p in px[face]], fill=255)
  fine = np.asarray(canvas, np.float32) / 255.0
  return fine.reshape(size, scale, size, scale).mean((1, 3)) > 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("category", ["chair", "car"])
def test_silhouette_matches_projection_with_viewpoint_to_rotation(category):
  size = 96  # the chair's legs are 2-3 pixels wide here.
  mesh = primitive_shapes.make_shape(category, seed=1)
  ious = []
  with Renderer(size) as renderer:
    renderer.load(mesh)
    for viewpoint in [(0, 0, 0), (90, 10, 0), (200, 35, 0), (30, -20, 25), (315, 60, -40)]:
      silhouette = renderer.render(viewpoint, DISTANCE, centered_window(FOV)).alpha > 0.5
      ious.append(_iou(silhouette, _reference_silhouette(mesh, viewpoint, size)))
      assert ious[-1] > 0.85, viewpoint
      # The test can fail: a turned azimuth or in-plane angle gives another silhouette.
      a, e, t = viewpoint
      for wrong in [(a + 180, e, -t - 40), (a, e, -t)] if t else [(a + 180, e, t - 40)]:
        assert _iou(silhouette, _reference_silhouette(mesh, wrong, size)) < 0.7, wrong
  assert np.mean(ious) > 0.9


def _dominant_color(renderer, viewpoint) -> np.ndarray:
  rendering = renderer.render(viewpoint, DISTANCE, centered_window(FOV), FLAT)
  return rendering.color.sum((0, 1)) / rendering.alpha.sum()


def test_marked_front_faces_camera_at_azimuth_0_and_right_side_at_90(renderer):
  renderer.load(primitive_shapes.marked_cube())
  colors = primitive_shapes.FACE_COLORS
  np.testing.assert_allclose(_dominant_color(renderer, (0, 0, 0)), colors["front"], atol=0.05)
  np.testing.assert_allclose(_dominant_color(renderer, (90, 0, 0)), colors["right"], atol=0.05)
  np.testing.assert_allclose(_dominant_color(renderer, (0, 89, 0)), colors["top"], atol=0.05)
  for back_or_left in [(180, 0, 0), (270, 0, 0)]:
    np.testing.assert_allclose(_dominant_color(renderer, back_or_left), 0.5, atol=0.05)
  # From the front-right and above, the three marked faces share the picture.
  assert np.all(_dominant_color(renderer, (45, 35, 0)) > 0.2)


def test_positive_inplane_turns_content_counter_clockwise(renderer):
  renderer.load(primitive_shapes.make_shape("desk_lamp", seed=0))
  upright = renderer.render((30, 20, 0), DISTANCE, centered_window(FOV)).alpha
  turned = renderer.render((30, 20, 25), DISTANCE, centered_window(FOV)).alpha > 0.5
  # PIL turns counter-clockwise for positive angles, about the image centre (the optical axis).
  expected = np.asarray(Image.fromarray(upright).rotate(25, Image.Resampling.BILINEAR)) > 0.5
  clockwise = np.asarray(Image.fromarray(upright).rotate(-25, Image.Resampling.BILINEAR)) > 0.5
  assert _iou(turned, expected) > 0.9
  assert _iou(turned, clockwise) < 0.75


def _quad(**appearance) -> TexturedMesh:
  """A square facing the front (-y), in the x-z plane."""
  vertices = np.array([[-1, 0, -1], [1, 0, -1], [1, 0, 1], [-1, 0, 1]], np.float32) * 0.7
  faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
  return TexturedMesh((MeshPart(vertices, faces, **appearance),))


def test_texture_uses_obj_convention_v_up(renderer):
  texture = np.zeros((8, 8, 3), np.uint8)
  texture[:4] = (255, 0, 0)  # the top rows of the image: v near 1.
  texture[4:] = (0, 0, 255)
  uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
  renderer.load(_quad(uvs=uvs, texture=texture))
  rendering = renderer.render((0, 0, 0), DISTANCE, centered_window(FOV), FLAT)
  color = rendering.color / np.maximum(rendering.alpha, 1e-6)[..., None]
  np.testing.assert_allclose(color[SIZE // 2 - 8, SIZE // 2], (1, 0, 0), atol=0.02)
  np.testing.assert_allclose(color[SIZE // 2 + 8, SIZE // 2], (0, 0, 1), atol=0.02)


def test_single_sided_sheets_are_seen_and_lit_from_both_sides(renderer):
  renderer.load(_quad(color=(0.8, 0.8, 0.8)))
  light = Lighting(direction=(0.0, 0.0, 1.0), ambient=0.3, diffuse=0.7, specular=0.0)
  for azimuth in (0, 180):
    rendering = renderer.render((azimuth, 0, 0), DISTANCE, centered_window(FOV), light)
    assert rendering.alpha[SIZE // 2, SIZE // 2] == 1.0
    # Lit from the camera side: (ambient + diffuse) * 0.8.
    np.testing.assert_allclose(rendering.color[SIZE // 2, SIZE // 2], 0.8, atol=0.01)


def test_only_faces_of_open_or_inward_surfaces_get_a_back_copy():
  import trimesh

  box = trimesh.creation.box()
  far_box = trimesh.creation.box().apply_translation((3, 0, 0))
  both = trimesh.util.concatenate([box, far_box])
  faces = both.faces.copy()
  faces[12:] = faces[12:, ::-1]  # the second box wound inwards: seen only from inside.
  np.testing.assert_array_equal(renderer_lib.closed_faces(both.vertices, faces),
                                [True] * 12 + [False] * 12)
  assert not renderer_lib.closed_faces(box.vertices, box.faces[:-1]).any()  # one face missing.
  box.unmerge_vertices()  # split vertices at one position still close the surface.
  assert renderer_lib.closed_faces(box.vertices, box.faces).all()
  part = MeshPart(both.vertices.astype(np.float32), faces.astype(np.int32))
  (_, chunk_faces, _, _), = renderer_lib._face_chunks(part)
  assert len(chunk_faces) == 24 + 12


def test_supersampling_gives_soft_edges_and_large_parts_are_chunked(renderer):
  import trimesh

  sphere = trimesh.creation.icosphere(subdivisions=6)  # 81920 faces: several pybullet shapes.
  renderer.load(TexturedMesh((MeshPart(sphere.vertices.astype(np.float32),
                                       sphere.faces.astype(np.int32)),)))
  alpha = renderer.render((0, 0, 0), DISTANCE, centered_window(FOV)).alpha
  assert np.any((alpha > 0.1) & (alpha < 0.9))  # anti-aliased rim.
  radius_px = np.tan(np.arcsin(1 / DISTANCE)) / np.tan(np.deg2rad(FOV) / 2) * SIZE / 2
  np.testing.assert_allclose(alpha.sum(), np.pi * radius_px**2, rtol=0.03)


def test_off_centre_window_is_a_crop_of_the_full_picture(renderer):
  renderer.load(primitive_shapes.make_shape("car", seed=2))
  full = Renderer(2 * SIZE)
  try:
    full.load(primitive_shapes.make_shape("car", seed=2))
    big = full.render((60, 25, 10), DISTANCE, centered_window(FOV)).alpha
  finally:
    full.close()
  half = np.tan(np.deg2rad(FOV) / 2)
  crop = renderer.render((60, 25, 10), DISTANCE, (0.0, half, 0.0, half)).alpha  # top-right.
  assert _iou(crop > 0.5, big[:SIZE, SIZE:] > 0.5) > 0.95
  uv = renderer_lib.project_points(np.array([[0.0, 0.0, 0.0]]), (60, 25, 10), DISTANCE)
  np.testing.assert_allclose(uv, [[0.0, 0.0]], atol=1e-12)  # the origin is on the optical axis.


def test_missing_pybullet_names_the_install(monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, "pybullet", None)
  with pytest.raises(ImportError, match="pip install pybullet"):
    Renderer(8)


def test_object_scale_stretches_the_mesh_along_its_own_axes():
  size = 96
  mesh = primitive_shapes.make_shape("car", seed=1)
  scale = np.array([1.3, 0.8, 1.1])
  stretched = TexturedMesh(tuple(p.replace(vertices=(p.vertices * scale).astype(np.float32))
                                 for p in mesh.parts))
  with Renderer(size) as renderer:
    renderer.load(mesh)
    for viewpoint in [(0, 10, 0), (60, 30, 10)]:
      alpha = renderer.render(viewpoint, DISTANCE, centered_window(FOV), object_scale=scale).alpha
      silhouette = alpha > 0.5
      assert _iou(silhouette, _reference_silhouette(stretched, viewpoint, size)) > 0.85
      assert _iou(silhouette, _reference_silhouette(mesh, viewpoint, size)) < 0.8  # can fail.
