"""The Sweet Home 3D furniture catalog (Debian ``sweethome3d-furniture``): a source of real meshes.

Each ``.sh3f`` file under ``/usr/share/sweethome3d/furniture`` is a zip holding
``PluginFurnitureCatalog.properties`` (``name#N``, ``category#N``, ``tags#N``, ``model#N``,
``modelRotation#N``, ``doorOrWindow#N``, ``creator#N``...) and the textured OBJ models it names.
This module reads the catalog, maps model names to ObjectNet3D-style categories (keywords plus a
manual pass of exceptions), and loads a model once into the kdpose object frame: the catalog's
``modelRotation`` first, then Sweet Home 3D's y-up / front +z to kdpose's z-up / front -y, then
centred and scaled to the unit sphere.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import posixpath
import re
import zipfile

import numpy as np
import trimesh
from PIL import Image

from kdpose.data.renderer import MeshPart, TexturedMesh, texture_array

FURNITURE_DIR = "/usr/share/sweethome3d/furniture"
INSTALL_HINT = "install it with `apt-get install sweethome3d-furniture`"

# Sweet Home 3D (x, y up, z towards the viewer = the front) -> kdpose (x, front -y, z up).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

# The manual pass: exact lower-case names whose keywords would mislead (None: not an object class
# we want). Checked before the keyword rules.
NAME_OVERRIDES: dict[str, str | None] = {
    "toilet brush": None, "toilet paper dispenser": None, "roasted chicken": None,
    "rice cooker": None, "tv remote control": None, "cup cake": None, "knife stand": None,
    "tv stand": "cabinet", "television cabinet": "cabinet", "glass door cabinet": "cabinet",
    "upper shelves cabinet": "cabinet", "sink cabinet": "cabinet", "bedside table": "cabinet",
    "filing cabinet": "filing_cabinet", "desk lamp": "desk_lamp", "technical table": "desk",
    "desk table": "desk", "coffee table": "diningtable", "table fan": "fan",
    "table tennis bat": "racket", "piano bench": "bench", "car model": "car",
    "glasses": "eyeglasses", "sunglasses": "eyeglasses", "plastic cup": "glass",
    "spray bottle": None, "utensils pot": None, "cosmetics pot": None, "motorbike": None,
    "rocking horse": None, "dog house": None, "opened convertible sofa bz": None,
    "air mattress": None, "sleeping bag": None, "futon": None, "hammock": None,
    "abdominal bench": None, "workbench": None, "baby high chair": None, "deck chair": None,
    "pool lounge": None, "beach chair": None, "relax chair": None, "changing table": None,
    "dressing table": None, "pool table": None, "football table": None, "table tennis": None,
    "chest freezer": None, "ceiling fan": None, "surveillance camera": None, "street lamp": None,
    "pendant lamp": None, "ceiling lamp": None, "chandelier lamp": None, "wall lamp artwork": None,
    "camping lamp": None, "bowl with fruits": None, "bowl with salad": None,
    "plate, glass and cutlery": None, "plate, glasses and cutlery": None, "christmas tree": None,
    "hospital bed": "bed", "island": "cabinet", "island extension": "cabinet",
    "clothes horse": None, "hot dog": None, "fork lift": None, "indoor bike": None,
    "armchair ottoman": None, "plant box": None, "class seat": "chair", "outdoor lamp": None,
    "cooker": None, "beer glass": "cup",
}
# Single models whose name is shared with good ones: "Lamp" BlendSwap-CC-0/121 is a chandelier.
ID_OVERRIDES: dict[str, str | None] = {"BlendSwap-CC-0/121": None}
# Models whose catalog front is not the object's front, found by rendering every model at
# azimuth 0 and 90: degrees to turn them about z (counter-clockwise seen from above).
YAW_FIXES: dict[str, float] = {
    "BlendSwap-CC-BY/106": 90.0,  # toy train, modelled sideways with the engine at -x.
}

# Keyword rules on the lower-case name, first match wins.
KEYWORD_RULES: tuple[tuple[str, str], ...] = (
    (r"wheelchair", "wheelchair"),
    (r"sofa|couch", "sofa"),
    (r"bed|crib", "bed"),
    (r"desk", "desk"),
    (r"bookcase|shelves|bookshelf", "bookshelf"),
    (r"wardrobe|cupboard", "wardrobe"),
    (r"cabinet|dresser|chest|drawers", "cabinet"),
    (r"chair|armchair", "chair"),
    (r"table", "diningtable"),
    (r"bench|bank", "bench"),
    (r"lamp", "lamp"),
    (r"guitar", "guitar"),
    (r"piano", "piano"),
    (r"tv|television", "tvmonitor"),
    (r"imac", "computer"),
    (r"laptop|ibook", "laptop"),
    (r"iphone|mobile phone", "cellphone"),
    (r"phone", "telephone"),
    (r"microwave", "microwave"),
    (r"stove|cooker|cooktop", "stove"),
    (r"oven", "oven"),
    (r"fridge|refrigerator", "refrigerator"),
    (r"washing machine|dryer machine", "washing_machine"),
    (r"toilets?|toilets unit|bidet", "toilet"),
    (r"bath|bathtub", "tub"),
    (r"washbasin|lavatory|vanity|sink", "washbasin"),
    (r"bottle|flacon|milk", "bottle"),
    (r"mug|cup", "cup"),
    (r"glass", "glass"),
    (r"vase|pottery|jar", "pot"),
    (r"bowl", "bowl"),
    (r"large pan|pan", "pan"),
    (r"plant|cactus|bamboo|yucca|spathiphyllum|orchids|tulips|lily|flowers|bonsai|ficus", "plant"),
    (r"knife", "knife"),
    (r"fork", "fork"),
    (r"spoon", "spoon"),
    (r"shoes|sneakers|bootie|mocassin", "shoe"),
    (r"slippers", "slipper"),
    (r"ford focus|peugeot.*|renault.*|seat leon|concept sedan.*|vw new beetle|suv|chevrolet|"
     r"smart car|van", "car"),
    (r"bus|city bus", "bus"),
    (r"truck", "truck"),
    (r"bike|bicycle", "bicycle"),
    (r"yamaha.*", "motorbike"),
    (r"skateboard", "skateboard"),
    (r"teapot", "teapot"),
    (r"kettle|boiler", "kettle"),
    (r"coffee (maker|machine|brewer|press)", "coffee_maker"),
    (r"toaster", "toaster"),
    (r"clock", "clock"),
    (r"fan", "fan"),
    (r"speaker", "speaker"),
    (r"suitcase|briefcase", "suitcase"),
    (r"backpack", "backpack"),
    (r"basket", "basket"),
    (r"dustbin|trashcan|trash can|recycling bin", "trash_bin"),
    (r"mailbox|letters box", "mailbox"),
    (r"extinguisher", "fire_extinguisher"),
    (r"helmet", "helmet"),
    (r"camera", "camera"),
    (r"headphones", "headphone"),
    (r"printer.*", "printer"),
    (r"stapler", "stapler"),
    (r"flashlight", "flashlight"),
    (r"scissors", "scissors"),
    (r"hammer", "hammer"),
    (r"screwdriver", "screwdriver"),
    (r"racket", "racket"),
    (r"white board", "blackboard"),
    (r"keyboard", "keyboard"),
    (r"rowboat", "boat"),
    (r"biplane", "aeroplane"),
    (r"train", "train"),
    (r"watch", "watch"),
    (r"deer|horse|bulldog|dog|cat|rabbit|chicken", "animal"),
)
_COMPILED_RULES = tuple((re.compile(rf"\b(?:{pattern})\b"), category)
                        for pattern, category in KEYWORD_RULES)

CATEGORIES = tuple(sorted(
    {c for _, c in KEYWORD_RULES} | {c for c in NAME_OVERRIDES.values() if c is not None}))
# Symmetric about the vertical axis (or nearly so): azimuth is undefined ("continuous") or
# defined up to 180 degrees ("two_fold"); ObjectNet3D's list where it names the category.
CATEGORY_SYMMETRY = {
    **dict.fromkeys(("basket", "bottle", "bowl", "cup", "fire_extinguisher", "flashlight", "glass",
                     "helmet", "lamp", "plant", "pot", "trash_bin"), "continuous"),
    "diningtable": "two_fold"}
_SKIPPED_SH3D_CATEGORIES = ("Doors and windows", "Staircases")
_CHARACTER_ARCHIVES = ("Reallusion.sh3f",)  # people: their skin textures make poor backgrounds.


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
  """One model of the catalog. ``category`` is the kdpose class (None: not used)."""

  archive: str  # path of the .sh3f file.
  index: int  # N of the name#N keys.
  name: str
  sh3d_category: str
  tags: tuple[str, ...]
  model: str  # path of the OBJ inside the archive.
  model_rotation: tuple[float, ...] | None  # 9 numbers, a 3x3 matrix row by row.
  door_or_window: bool
  creator: str
  model_signature: tuple[int, int]  # (CRC-32, size) of the OBJ, to find duplicates.
  category: str | None

  @property
  def object_id(self) -> str:
    return f"{os.path.splitext(os.path.basename(self.archive))[0]}/{self.index}"


def parse_properties(text: str) -> dict[str, str]:
  """A Java ``.properties`` text -> dict (comments, line continuations, backslash escapes)."""
  result, pending = {}, ""
  for raw in text.splitlines():
    line = pending + raw.lstrip()
    if not pending and (not line or line[0] in "#!"):
      continue
    if (len(line) - len(line.rstrip("\\"))) % 2 == 1:  # an odd run of \ continues the line.
      pending = line[:-1]
      continue
    pending = ""
    match = re.match(r"((?:[^\\=: \t]|\\.)*)[ \t]*[=: \t][ \t]*(.*)$", line)
    key, value = (match.group(1), match.group(2)) if match else (line, "")
    result[_unescape(key)] = _unescape(value)
  return result


def _unescape(text: str) -> str:
  escapes = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
  return re.sub(r"\\(u[0-9a-fA-F]{4}|.)",
                lambda m: chr(int(m.group(1)[1:], 16)) if len(m.group(1)) == 5
                else escapes.get(m.group(1), m.group(1)), text)


def map_category(name: str) -> str | None:
  """The kdpose category of a catalog name ("Oak chair" -> "chair"), None when unmapped."""
  key = " ".join(name.lower().split())
  if key in NAME_OVERRIDES:
    return NAME_OVERRIDES[key]
  for pattern, category in _COMPILED_RULES:
    if pattern.search(key):
      return category
  return None


def read_catalog(furniture_dir: str = FURNITURE_DIR) -> list[CatalogEntry]:
  """Every model of every ``.sh3f`` archive under ``furniture_dir``, in a stable order."""
  archives = sorted(glob.glob(os.path.join(furniture_dir, "*.sh3f")))
  if not archives:
    raise FileNotFoundError(
        f"No Sweet Home 3D furniture (*.sh3f) under {furniture_dir}: {INSTALL_HINT}.")
  entries = []
  for archive in archives:
    with zipfile.ZipFile(archive) as zf:
      try:
        props = parse_properties(zf.read("PluginFurnitureCatalog.properties").decode("latin-1"))
      except KeyError as e:
        raise ValueError(f"{archive} has no PluginFurnitureCatalog.properties.") from e
      entries += [_entry(archive, zf, index, props)
                  for index in sorted(int(k[5:]) for k in props if k.startswith("name#"))]
  return entries


def _entry(archive: str, zf: zipfile.ZipFile, index: int, props: dict[str, str]) -> CatalogEntry:
  get = lambda key, default="": props.get(f"{key}#{index}", default)
  model = get("model").lstrip("/")
  try:
    info = zf.getinfo(model)
    signature = (info.CRC, info.file_size)
  except KeyError:
    signature = (0, 0)  # load_model reports the missing file.
  rotation = tuple(float(x) for x in get("modelRotation").split()) or None
  if rotation is not None and len(rotation) != 9:
    raise ValueError(f"{archive}: modelRotation#{index} has {len(rotation)} numbers, not 9.")
  skipped = get("doorOrWindow") == "true" or get("category") in _SKIPPED_SH3D_CATEGORIES
  is_tree = get("category") == "Exterior" and "Tree" in get("tags")
  entry = CatalogEntry(
      archive=archive, index=index, name=get("name"), sh3d_category=get("category"),
      tags=tuple(t.strip() for t in get("tags").split(",") if t.strip()), model=model,
      model_rotation=rotation, door_or_window=get("doorOrWindow") == "true",
      creator=get("creator"), model_signature=signature,
      category=None if skipped or is_tree else map_category(get("name")))
  if entry.object_id in ID_OVERRIDES:
    entry = dataclasses.replace(entry, category=ID_OVERRIDES[entry.object_id])
  return entry


def select_models(entries: list[CatalogEntry]) -> list[CatalogEntry]:
  """Mapped, non-duplicate models (same OBJ bytes counted once), in catalog order."""
  seen, selected = set(), []
  for entry in entries:
    if entry.category is None or entry.model_signature in seen:
      continue
    seen.add(entry.model_signature)
    selected.append(entry)
  return selected


class ModelError(ValueError):
  """A catalog model that cannot be loaded or has no surface (the builder skips it)."""


class _ZipResolver(trimesh.resolvers.Resolver):
  """Lets trimesh read an OBJ's MTL and textures from the same folder of the archive."""

  def __init__(self, zf: zipfile.ZipFile, folder: str):
    self._zf, self._folder = zf, folder

  def get(self, name: str) -> bytes:
    return self._zf.read(posixpath.normpath(posixpath.join(self._folder, name.replace("\\", "/"))))

  def keys(self):
    return iter(())

  def write(self, name, data):
    raise NotImplementedError("Read-only archive.")

  def namespaced(self, namespace):
    return _ZipResolver(self._zf, posixpath.join(self._folder, namespace))


def load_model(entry: CatalogEntry) -> TexturedMesh:
  """The model of ``entry`` in the kdpose object frame (z up, front -y), in the unit sphere,
  one ``MeshPart`` per material with its texture. Raises ``ModelError`` naming the model."""
  what = f"{entry.object_id} ({entry.name!r}, {entry.archive}:{entry.model})"
  try:
    with zipfile.ZipFile(entry.archive) as zf:
      scene = trimesh.load(io.BytesIO(zf.read(entry.model)), file_type="obj", force="scene",
                           resolver=_ZipResolver(zf, posixpath.dirname(entry.model)),
                           process=False)
      parts = _scene_parts(scene)
  except (KeyError, OSError, ValueError, IndexError, zipfile.BadZipFile) as e:
    raise ModelError(f"Cannot read model {what}: {e}") from e
  if not parts:
    raise ModelError(f"Model {what} has no triangles.")
  mesh = TexturedMesh(tuple(parts))
  if entry.model_rotation is not None:  # Sweet Home 3D applies it to the raw OBJ (v' = M v).
    mesh = mesh.transformed(np.reshape(entry.model_rotation, (3, 3)))
  mesh = mesh.transformed(Y_UP_TO_Z_UP)
  if entry.object_id in YAW_FIXES:
    mesh = mesh.turned(YAW_FIXES[entry.object_id])
  try:
    return mesh.normalized()
  except ValueError as e:
    raise ModelError(f"Model {what}: {e}") from e


def _scene_parts(scene: trimesh.Scene) -> list[MeshPart]:
  parts = []
  for node in scene.graph.nodes_geometry:
    transform, name = scene.graph[node]
    geom = scene.geometry[name]
    if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
      continue
    vertices = trimesh.transform_points(geom.vertices, transform).astype(np.float32)
    normals = np.asarray(geom.vertex_normals, np.float64) @ np.asarray(transform)[:3, :3].T
    parts.append(MeshPart(vertices, np.asarray(geom.faces, np.int32), normals=normals.astype(
        np.float32), **_appearance(geom.visual)))
  return parts


def _appearance(visual) -> dict:
  """color (rgb in [0, 1]), uvs [V, 2] and texture uint8 [h, w, 3] of a trimesh visual."""
  material = getattr(visual, "material", None)
  color = np.asarray(getattr(material, "main_color", None)
                     if material is not None else visual.main_color, np.float64)[:3] / 255.0
  image = getattr(material, "image", None) if material is not None else None
  uv = getattr(visual, "uv", None)
  if image is None or uv is None or len(uv) == 0:
    return {"color": tuple(color)}
  return {"color": tuple(color), "uvs": np.asarray(uv, np.float32),
          "texture": texture_array(image)}


def texture_images(furniture_dir: str = FURNITURE_DIR, limit: int = 48,
                   min_bytes: int = 20_000) -> list[np.ndarray]:
  """Up to ``limit`` texture photos (wood, fabric, stone...) of the catalog: uint8 [h, w, 3]."""
  members = []
  for archive in sorted(glob.glob(os.path.join(furniture_dir, "*.sh3f"))):
    if os.path.basename(archive) in _CHARACTER_ARCHIVES:
      continue
    with zipfile.ZipFile(archive) as zf:
      members += [(archive, i.filename) for i in zf.infolist()
                  if i.filename.lower().endswith((".jpg", ".jpeg")) and i.file_size >= min_bytes
                  and "/" in i.filename.strip("/")]
  chosen = members[:: max(1, len(members) // limit)][:limit]
  images = []
  for archive, name in chosen:
    with zipfile.ZipFile(archive) as zf:
      images.append(texture_array(Image.open(io.BytesIO(zf.read(name)))))
  return images
