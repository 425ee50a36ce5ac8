"""0 A.D.'s art (Debian ``0ad-data``, CC-BY-SA 3.0, Wildfire Games): ships, siege engines,
helmets and shields as real meshes.

The game packs its data in one zip, ``mods/public/public.zip``. An *actor* file
(``art/actors/**.xml``) names a model's mesh (``<mesh>x.dae</mesh>``, stored compiled as
``art/meshes/x.dae.cached.pmd``) and its colour texture (``<texture file="y.png"
name="baseTex"/>``, stored as ``art/textures/skins/y.png.cached.dds``, which Pillow reads). Each
variant of an actor's first group is one shape; a mesh used by several actors counts once. Props
that the game attaches at run time (sails, banners) are not drawn.

PMD (version 3 and 4, little-endian): ``"PSMD"``, version, data size, vertex count, (v4) the number
of texture-coordinate sets, then per vertex position [3], normal [3], uv [2] x sets, four bone
indices (uint8) and weights [4]; then the face count and uint16 corner indices [3] per face.

Axes: y up, the front (a ship's bow, a siege engine's business end, the face of a helmet or
shield) at +z, as the contact sheets show (``tools/contact_sheets.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
import struct
import xml.etree.ElementTree as ElementTree
import zipfile

import numpy as np
from PIL import Image

from kdpose.data import mesh_sources
from kdpose.data.renderer import MeshPart, TexturedMesh, texture_array

PUBLIC_ZIP = "/usr/share/games/0ad/mods/public/public.zip"
INSTALL_HINT = "install it with `apt-get install 0ad-data`"

# Actor paths (relative to art/actors/, without .xml) -> kdpose category; first match wins,
# None drops the actor. Buildings are left out: their contact sheets show no consistent front
# (and many are round).
_RULES: tuple[tuple[str, str | None], ...] = (
    (r"^structures/.*(destruct|_fire$|_sail|rubble)", None),
    (r"^structures/.*(trireme|bireme|quinquereme|pentekonter|merchant|fishing|warship|fireship|"
     r"ship|boat|rowboat|skiff)", "boat"),
    (r"^units/[a-z]+/siege_(ram|tower|lithobolos|oxybeles|polybolos|onager|ballista|scorpio|"
     r"bolt|stone)[a-z_]*$", "siege_engine"),
    (r"^props/units/helmets/", "helmet"),
    (r"^props/units/shields/", "shield"),
)
_COMPILED = tuple((re.compile(pattern), category) for pattern, category in _RULES)
_SKIPPED_SIEGE = re.compile(r"packed|pivot|_rock|ladder|operator|infantry")
CATEGORIES = tuple(sorted({c for _, c in _RULES if c is not None}))
# As ObjectNet3D lists it, a helmet has no defined azimuth.
CATEGORY_SYMMETRY = {"helmet": "continuous"}


class PMDError(ValueError):
  """A mesh that cannot be read; the message names the archive member."""


@dataclasses.dataclass(frozen=True)
class ActorModel:
  """One shape: the actor variant that names it, its category, mesh and texture members."""

  object_id: str  # "0ad/<mesh path>".
  category: str
  mesh: str  # zip member of the .pmd.
  texture: str | None  # zip member of the .dds, None when the actor names none.
  archive: str = PUBLIC_ZIP


def category_of(actor: str) -> str | None:
  """The category of an actor path like "structures/romans/trireme" (None: not used)."""
  if _SKIPPED_SIEGE.search(actor) and actor.startswith("units/"):
    return None
  for pattern, category in _COMPILED:
    if pattern.search(actor):
      return category
  return None


@functools.lru_cache(maxsize=2)
def _open(archive: str) -> zipfile.ZipFile:
  """The archive, opened once per process (its directory of 36k members takes ~0.1 s)."""
  try:
    return zipfile.ZipFile(archive)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"No 0 A.D. data at {archive}: {INSTALL_HINT}.") from e


def read_actors(archive: str = PUBLIC_ZIP) -> list[ActorModel]:
  """Every used shape of the archive, sorted by id, one per distinct mesh."""
  zf = _open(archive)
  members = set(zf.namelist())
  found: dict[str, ActorModel] = {}
  for member in sorted(m for m in members if m.startswith("art/actors/") and m.endswith(".xml")):
    actor = member[len("art/actors/"):-len(".xml")]
    category = category_of(actor)
    if category is None:
      continue
    for mesh, texture in _actor_variants(zf.read(member), member):
      mesh_member = f"art/meshes/{mesh}.cached.pmd"
      texture_member = f"art/textures/skins/{texture}.cached.dds" if texture else None
      if mesh_member not in members or mesh_member in found:
        continue
      found[mesh_member] = ActorModel(
          f"0ad/{mesh}", category, mesh_member,
          texture_member if texture_member in members else None, archive)
  return sorted(found.values(), key=lambda m: m.object_id)


def _actor_variants(xml: bytes, where: str) -> list[tuple[str, str | None]]:
  """(mesh, baseTex file) of each variant of the actor's first group that names a mesh."""
  try:
    root = ElementTree.fromstring(xml)
  except ElementTree.ParseError as e:
    raise ValueError(f"{where}: not valid XML ({e}).") from e
  group = root.find("group")
  variants = []
  for variant in group.findall("variant") if group is not None else []:
    mesh = variant.findtext("mesh")
    if not mesh:
      continue
    texture = None
    for element in variant.iter("texture"):
      if element.get("name") == "baseTex":
        texture = element.get("file")
    variants.append((mesh.strip(), texture))
  return variants


def parse_pmd(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """A PMD mesh -> (positions float32 [V, 3], normals [V, 3], uvs [V, 2] of the first set,
  faces int32 [F, 3]), in the file's axes. Raises ``PMDError`` naming ``where``."""
  try:
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    if magic != b"PSMD" or version not in (3, 4):
      raise PMDError(f"{where}: not a PMD v3/v4 mesh ({magic!r}, version {version}).")
    offset = 12
    (num_vertices,) = struct.unpack_from("<I", data, offset)
    offset += 4
    num_uv_sets = 1
    if version == 4:
      (num_uv_sets,) = struct.unpack_from("<I", data, offset)
      offset += 4
    stride = 4 * (6 + 2 * num_uv_sets) + 4 + 16  # floats, then bone indices and weights.
    table = np.frombuffer(data, np.uint8, num_vertices * stride, offset).reshape(-1, stride)
    offset += num_vertices * stride
    floats = np.ascontiguousarray(table[:, :4 * (6 + 2 * num_uv_sets)]).view("<f4")
    (num_faces,) = struct.unpack_from("<I", data, offset)
    faces = np.frombuffer(data, "<u2", 3 * num_faces, offset + 4).reshape(-1, 3)
  except (struct.error, ValueError) as e:
    if isinstance(e, PMDError):
      raise
    raise PMDError(f"{where}: truncated or malformed PMD ({e}).") from e
  if num_uv_sets < 1 or (faces.size and faces.max() >= num_vertices):
    raise PMDError(f"{where}: faces refer to vertex {faces.max()} of {num_vertices}.")
  return (floats[:, 0:3].astype(np.float32), floats[:, 3:6].astype(np.float32),
          floats[:, 6:8].astype(np.float32), faces.astype(np.int32))


def load_model(model: ActorModel) -> TexturedMesh:
  """The model in the kdpose object frame, in the unit sphere, with its colour texture."""
  zf = _open(model.archive)
  where = f"{model.archive}:{model.mesh}"
  try:
    data = zf.read(model.mesh)
  except KeyError as e:
    raise PMDError(f"{where}: missing from the archive.") from e
  positions, normals, uvs, faces = parse_pmd(data, where)
  if not len(faces):
    raise PMDError(f"{where}: no faces.")
  texture = _texture(zf, model.texture) if model.texture else None
  # DirectX-style textures: v grows downwards; MeshPart uvs follow OBJ (v up).
  part = MeshPart(positions, faces, normals=normals, color=(0.7, 0.65, 0.55),
                  uvs=None if texture is None else uvs * (1.0, -1.0) + (0.0, 1.0),
                  texture=texture)
  mesh = TexturedMesh((part,)).transformed(mesh_sources.to_kdpose("+z", "+y"))
  try:
    return mesh.normalized()
  except ValueError as e:
    raise PMDError(f"{where}: {e}") from e


def _texture(zf: zipfile.ZipFile, member: str) -> np.ndarray | None:
  try:
    return texture_array(Image.open(io.BytesIO(zf.read(member))))
  except (KeyError, OSError, ValueError):
    return None  # drawn in plain colour.
