"""The AC3D reader and the Debian game-model sources, on AC3D files the tests write."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from kdpose.data import ac3d, mesh_sources

# A unit square (one polygon, textured), a child triangle strip moved by rot and loc, a line.
_FILE = """AC3Db
MATERIAL "red" rgb 1 0 0  amb 0.2 0.2 0.2  emis 0 0 0  spec 0 0 0  shi 10  trans 0
MATERIAL "blue" rgb 0 0 1  amb 0.2 0.2 0.2  emis 0 0 0  spec 0 0 0  shi 10  trans 0
OBJECT world
kids 1
OBJECT poly
name "square"
texture "skin.png"
numvert 4
0 0 0
1 0 0
1 1 0
0 1 0
numsurf 2
SURF 0x20
mat 0
refs 4
0 0 0
1 1 0
2 1 1
3 0 1
SURF 0x2
mat 0
refs 2
0 0 0
2 1 1
kids 1
OBJECT poly
name "strip"
rot 0 -1 0 1 0 0 0 0 1
loc 10 0 0
numvert 4
0 0 0
1 0 0
0 1 0
1 1 0
numsurf 1
SURF 0x34
mat 1
refs 4
0 0 0 0.5 0.5
1 1 0 0.5 0.5
2 0 1 0.5 0.5
3 1 1 0.5 0.5
kids 0
"""


def test_ac3d_reads_polygons_strips_kids_and_materials():
  skin = np.full((4, 4, 3), 200, np.uint8)
  mesh = ac3d.parse(_FILE, "model.ac", lambda name: skin if name == "skin.png" else None)
  square, strip = mesh.parts  # sorted by material; the line adds nothing.
  assert square.color == (1.0, 0.0, 0.0) and strip.color == (0.0, 0.0, 1.0)
  assert square.texture is skin and strip.texture is None and strip.uvs is None
  # The fan of the quad: (0, 1, 2) and (0, 2, 3).
  np.testing.assert_allclose(square.vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0],
                                               [0, 0, 0], [1, 1, 0], [0, 1, 0]])
  np.testing.assert_allclose(square.uvs[:3], [[0, 0], [1, 0], [1, 1]])
  # The strip (0, 1, 2), (1, 3, 2) after v' = rot @ v + loc: (1, 0, 0) -> (10, 1, 0).
  rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)
  local = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
  np.testing.assert_allclose(strip.vertices, local @ rot.T + [10, 0, 0], atol=1e-6)
  assert strip.faces.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_ac3d_errors_name_the_file_and_line():
  with pytest.raises(ac3d.AC3DError, match="x.ac: not an AC3D file"):
    ac3d.parse("OFF\n3 1 0\n", "x.ac")
  broken = _FILE.replace("refs 4\n0 0 0\n1 1 0\n2 1 1\n3 0 1", "refs 4\n0 0 0\n1 1 0\n2 1 1\n9 0 1")
  with pytest.raises(ac3d.AC3DError, match=r"x.ac:\d+: a surface refers to vertex 9 of 4"):
    ac3d.parse(broken, "x.ac")
  with pytest.raises(ac3d.AC3DError, match="x.ac: the file ends early"):
    ac3d.parse(_FILE[:_FILE.index("SURF 0x2")], "x.ac")


def test_ac3d_read_finds_textures_beside_the_model(tmp_path):
  Image.fromarray(np.full((8, 8, 3), (0, 255, 0), np.uint8)).save(tmp_path / "skin.rgb", "SGI")
  path = tmp_path / "model.ac"
  path.write_text(_FILE)  # names skin.png: the loader falls back to skin.rgb.
  square = ac3d.read(str(path)).parts[0]
  assert square.texture.shape == (8, 8, 3) and tuple(square.texture[0, 0]) == (0, 255, 0)


@pytest.mark.parametrize("front, up", [("-x", "+y"), ("+z", "+y"), ("+x", "+y"), ("+x", "+z")])
def test_source_axes_take_front_to_minus_y_and_up_to_z(front, up):
  rotation = mesh_sources.to_kdpose(front, up)
  axis = {"x": 0, "y": 1, "z": 2}
  def unit(name):
    return (1.0 if name[0] == "+" else -1.0) * np.eye(3)[axis[name[1]]]
  np.testing.assert_allclose(rotation @ unit(front), [0, -1, 0])
  np.testing.assert_allclose(rotation @ unit(up), [0, 0, 1])
  assert np.isclose(np.linalg.det(rotation), 1.0)  # a rotation, never a mirror.


def test_sweet_home_axes_agree_with_the_generic_rule():
  from kdpose.data import sweethome3d
  np.testing.assert_allclose(mesh_sources.to_kdpose("+z", "+y"), sweethome3d.Y_UP_TO_Z_UP)


def test_torcs_source_lists_cars_and_loads_them_in_the_unit_sphere(tmp_path, monkeypatch):
  car = tmp_path / "cars" / "wagon"
  car.mkdir(parents=True)
  (car / "wagon.acc").write_text(_FILE)
  (tmp_path / "cars" / "empty").mkdir()  # a folder without its model is not a car.
  monkeypatch.setitem(mesh_sources.SOURCES, "torcs", mesh_sources.dataclasses.replace(
      mesh_sources.SOURCES["torcs"], root=str(tmp_path)))
  models = mesh_sources.get("torcs").models()
  assert [(m.object_id, m.category) for m in models] == [("torcs/cars/wagon/wagon.acc", "car")]
  mesh = mesh_sources.load_model("torcs", models[0])
  radius = np.linalg.norm(mesh.vertices, axis=1).max()
  assert np.isclose(radius, 1.0, atol=1e-5)
  # TORCS: nose +x, up +y -> kdpose front -y: the file's x extent becomes the y extent.
  extent = np.ptp(mesh.vertices, axis=0)
  assert extent[1] > extent[0]


def test_missing_package_names_the_install_command(monkeypatch):
  monkeypatch.setitem(mesh_sources.SOURCES, "crrcsim", mesh_sources.dataclasses.replace(
      mesh_sources.SOURCES["crrcsim"], root=os.path.join("/nonexistent", "crrcsim")))
  with pytest.raises(FileNotFoundError, match="apt-get install crrcsim-data"):
    mesh_sources.get("crrcsim").models()
  with pytest.raises(ValueError, match="Unknown mesh source 'nope'"):
    mesh_sources.get("nope")


def test_yaw_fixes_turn_a_model_about_the_vertical(tmp_path, monkeypatch):
  car = tmp_path / "cars" / "wagon"
  car.mkdir(parents=True)
  (car / "wagon.acc").write_text(_FILE)
  monkeypatch.setitem(mesh_sources.SOURCES, "torcs", mesh_sources.dataclasses.replace(
      mesh_sources.SOURCES["torcs"], root=str(tmp_path)))
  model = mesh_sources.get("torcs").models()[0]
  plain = mesh_sources.load_model("torcs", model).vertices
  monkeypatch.setitem(mesh_sources.YAW_FIXES, model.object_id, 90.0)
  turned = mesh_sources.load_model("torcs", model).vertices
  # +90 about z (counter-clockwise from above): (x, y, z) -> (-y, x, z).
  np.testing.assert_allclose(turned, plain @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
                             atol=1e-5)


def test_every_yaw_fix_names_a_listed_model():
  listed = {m.object_id for name in mesh_sources.SOURCES
            if os.path.isdir(mesh_sources.SOURCES[name].root)
            for m in mesh_sources.get(name).models()}
  if not os.path.isdir(os.path.join(mesh_sources.FLIGHTGEAR_DIR, "Scenery")):
    pytest.skip("flightgear-data-base is not installed")
  assert set(mesh_sources.YAW_FIXES) <= listed  # a typo would silently turn nothing.
