"""The 0 A.D. source: PMD meshes, actor files and textures, from an archive the tests write."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from kdpose.data import zeroad

# A square in the x-y plane (y up in 0 A.D.), facing +z, two triangles.
_POSITIONS = np.array([[-1, 0, 0], [1, 0, 0], [1, 2, 0], [-1, 2, 0]], np.float32)
_UVS = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
_FACES = np.array([[0, 1, 2], [0, 2, 3]], np.uint16)


def _pmd(version: int = 4, uv_sets: int = 2, faces: np.ndarray = _FACES) -> bytes:
  body = struct.pack("<I", len(_POSITIONS))
  if version == 4:
    body += struct.pack("<I", uv_sets)
  for position, uv in zip(_POSITIONS, _UVS, strict=True):
    body += struct.pack("<6f", *position, 0.0, 0.0, 1.0)
    body += struct.pack(f"<{2 * uv_sets}f", *np.tile(uv, uv_sets))
    body += bytes([0, 255, 255, 255]) + struct.pack("<4f", 1.0, 0.0, 0.0, 0.0)
  body += struct.pack("<I", len(faces)) + faces.astype("<u2").tobytes()
  body += struct.pack("<II", 0, 0)  # no bones, no prop points.
  return b"PSMD" + struct.pack("<II", version, len(body)) + body


def _actor(mesh: str, texture: str | None) -> bytes:
  textures = f'<textures><texture file="{texture}" name="baseTex"/></textures>' if texture else ""
  return (f'<?xml version="1.0"?><actor version="1"><group><variant name="a"><mesh>{mesh}</mesh>'
          f"{textures}</variant></group><material>x.xml</material></actor>").encode()


@pytest.fixture
def archive(tmp_path):
  path = str(tmp_path / "public.zip")
  dds = io.BytesIO()
  Image.fromarray(np.full((8, 8, 3), (10, 200, 30), np.uint8)).save(dds, "DDS")
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("art/meshes/structural/rome_trireme.dae.cached.pmd", _pmd())
    zf.writestr("art/meshes/props/helmet/corinthian.dae.cached.pmd", _pmd(version=3, uv_sets=1))
    zf.writestr("art/textures/skins/structural/rome_trireme.png.cached.dds", dds.getvalue())
    zf.writestr("art/actors/structures/romans/trireme.xml",
                _actor("structural/rome_trireme.dae", "structural/rome_trireme.png"))
    # A second actor of the same mesh counts once; walls and unknown folders are not used.
    zf.writestr("art/actors/structures/romans/trireme_b.xml",
                _actor("structural/rome_trireme.dae", None))
    zf.writestr("art/actors/structures/romans/wall_long.xml", _actor("structural/wall.dae", None))
    zf.writestr("art/actors/props/units/helmets/corinthian.xml",
                _actor("props/helmet/corinthian.dae", "missing.png"))
  zeroad._open.cache_clear()
  yield path
  zeroad._open.cache_clear()


def test_parse_pmd_reads_v3_and_v4():
  for version, uv_sets in ((4, 2), (3, 1)):
    positions, normals, uvs, faces = zeroad.parse_pmd(_pmd(version, uv_sets), "m.pmd")
    np.testing.assert_array_equal(positions, _POSITIONS)
    np.testing.assert_array_equal(normals, np.tile([0, 0, 1], (4, 1)))
    np.testing.assert_array_equal(uvs, _UVS)
    assert faces.tolist() == _FACES.tolist() and faces.dtype == np.int32


def test_parse_pmd_errors_name_the_member():
  with pytest.raises(zeroad.PMDError, match="m.pmd: not a PMD"):
    zeroad.parse_pmd(b"OFF\n" + bytes(20), "m.pmd")
  with pytest.raises(zeroad.PMDError, match="m.pmd: truncated"):
    zeroad.parse_pmd(_pmd()[:60], "m.pmd")
  with pytest.raises(zeroad.PMDError, match="m.pmd: faces refer to vertex 7 of 4"):
    zeroad.parse_pmd(_pmd(faces=np.array([[0, 1, 7]])), "m.pmd")


def test_categories_follow_the_actor_path():
  assert zeroad.category_of("structures/romans/trireme") == "boat"
  assert zeroad.category_of("structures/ptolemies/ship_merchant_sail") is None
  assert zeroad.category_of("structures/romans/temple_mars") is None  # no consistent front.
  assert zeroad.category_of("structures/romans/wall_long") is None
  assert zeroad.category_of("props/structures/romans/trireme_main_sail") is None  # a part.
  assert zeroad.category_of("units/romans/siege_ram") == "siege_engine"
  assert zeroad.category_of("units/romans/siege_scorpio_packed") is None
  assert zeroad.category_of("props/units/shields/scutum_01") == "shield"
  assert zeroad.category_of("units/romans/infantry_spearman_a") is None


def test_read_actors_lists_each_mesh_once_with_its_texture(archive):
  models = zeroad.read_actors(archive)
  assert [(m.object_id, m.category) for m in models] == [
      ("0ad/props/helmet/corinthian.dae", "helmet"), ("0ad/structural/rome_trireme.dae", "boat")]
  assert models[0].texture is None  # the actor names a texture the archive lacks.
  assert models[1].texture == "art/textures/skins/structural/rome_trireme.png.cached.dds"


def test_load_model_turns_y_up_front_z_into_kdpose_axes(archive):
  helmet, ship = zeroad.read_actors(archive)
  mesh = zeroad.load_model(ship)
  part = mesh.parts[0]
  assert np.isclose(np.linalg.norm(part.vertices, axis=1).max(), 1.0, atol=1e-5)
  # y up -> z up: the square's height (y) becomes z; its normal (+z, the front) becomes -y.
  extent = np.ptp(part.vertices, axis=0)
  assert extent[1] < 1e-6 and np.isclose(extent[2], extent[0])
  np.testing.assert_allclose(part.normals, np.tile([0, -1, 0], (4, 1)), atol=1e-6)
  assert part.texture.shape == (8, 8, 3) and tuple(part.texture[0, 0]) == (10, 200, 30)
  np.testing.assert_allclose(part.uvs, _UVS * (1, -1) + (0, 1))  # v flipped to point up.
  assert zeroad.load_model(helmet).parts[0].texture is None


def test_missing_archive_names_the_install(tmp_path):
  zeroad._open.cache_clear()
  with pytest.raises(FileNotFoundError, match="apt-get install 0ad-data"):
    zeroad.read_actors(str(tmp_path / "none.zip"))
