"""Procedural objects with a clear front, built from trimesh primitives (no system package needed).

Every object is made in the kdpose object frame (z up, front facing -y, right side +x), then
centred and scaled to the unit sphere. A seed picks one random variant (proportions, optional
pieces, colours) of a category; each piece is a ``MeshPart`` with its own colour. Tests and the tiny
dataset use these; the real default dataset uses Sweet Home 3D models (``sweethome3d.py``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import trimesh

from kdpose.data.renderer import MeshPart, TexturedMesh

CATEGORIES = ("chair", "car", "bookshelf", "cup", "desk_lamp", "bottle")
CATEGORY_SYMMETRY = {"bottle": "continuous"}  # a round bottle has no azimuth.
_SECTIONS = 24  # polygon sides of round pieces.


def _piece(mesh: trimesh.Trimesh, color) -> MeshPart:
  """A flat-shaded part: unmerged vertices so each triangle keeps its own normal."""
  vertices = mesh.vertices[mesh.faces].reshape(-1, 3)
  normals = np.repeat(mesh.face_normals, 3, axis=0)
  faces = np.arange(len(vertices), dtype=np.int32).reshape(-1, 3)
  return MeshPart(vertices.astype(np.float32), faces, tuple(float(c) for c in color),
                  normals=normals.astype(np.float32))


def _box(size, center, color) -> MeshPart:
  """An axis-aligned box: size [3] (x, y, z extents) centred at center [3]."""
  return _piece(trimesh.creation.box(extents=size, transform=_translation(center)), color)


def _cylinder(radius, height, center, color, axis="z") -> MeshPart:
  """A closed cylinder along ``axis`` ("x", "y" or "z") centred at center [3]."""
  mesh = trimesh.creation.cylinder(radius, height, sections=_SECTIONS)
  return _piece(mesh.apply_transform(_translation(center) @ _axis_from_z(axis)), color)


def _cone(radius, height, base_center, color, flip=False) -> MeshPart:
  """A cone along z with its base at base_center; flip=True points the tip down."""
  mesh = trimesh.creation.cone(radius, height, sections=_SECTIONS)
  if flip:
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi, (1, 0, 0)))
  return _piece(mesh.apply_translation(base_center), color)


def _translation(center) -> np.ndarray:
  return trimesh.transformations.translation_matrix(center)


def _axis_from_z(axis: str) -> np.ndarray:
  """A rotation taking the z axis onto ``axis``."""
  turns = {"z": (0.0, (1, 0, 0)), "x": (np.pi / 2, (0, 1, 0)), "y": (np.pi / 2, (1, 0, 0))}
  angle, about = turns[axis]
  return trimesh.transformations.rotation_matrix(angle, about)


def _color(rng: np.random.Generator):
  return rng.uniform(0.15, 0.95, size=3)


def _chair(rng: np.random.Generator) -> list[MeshPart]:
  """Seat, a backrest at the back (+y), four legs, sometimes armrests."""
  width, depth, seat_h = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.1), rng.uniform(0.8, 1.1)
  back_h, leg = rng.uniform(0.8, 1.4), rng.uniform(0.05, 0.1)
  wood, cushion = _color(rng), _color(rng)
  parts = [_box((width, depth, 0.1), (0, 0, seat_h), cushion),
           _box((width, 0.08, back_h), (0, depth / 2 - 0.04, seat_h + back_h / 2), cushion)]
  for x in (-1, 1):
    for y in (-1, 1):
      parts.append(_box((leg, leg, seat_h), (x * (width - leg) / 2, y * (depth - leg) / 2,
                                             seat_h / 2), wood))
    if rng.random() < 0.5:
      parts.append(_box((0.08, depth, 0.06), (x * width / 2, 0, seat_h + 0.35), wood))
  return parts


def _car(rng: np.random.Generator) -> list[MeshPart]:
  """Body, a cabin set back (+y), four wheels, yellow headlights at the front, red rear lights."""
  length, width, wheel = rng.uniform(2.0, 2.8), rng.uniform(0.9, 1.2), rng.uniform(0.2, 0.3)
  body_h, cabin_len = rng.uniform(0.35, 0.5), rng.uniform(0.8, 1.3)
  body_z = wheel + body_h / 2
  parts = [_box((width, length, body_h), (0, 0, body_z), _color(rng)),
           _box((width * 0.85, cabin_len, 0.4),
                (0, length / 2 - cabin_len / 2 - rng.uniform(0.1, 0.4), body_z + body_h / 2 + 0.2),
                _color(rng))]
  for x in (-1, 1):
    for y in (-1, 1):
      parts.append(_cylinder(wheel, 0.2, (x * width / 2, y * (length / 2 - 1.4 * wheel), wheel),
                             (0.1, 0.1, 0.1), axis="x"))
    lamp_x = x * width * 0.35
    parts.append(_box((0.2, 0.04, 0.1), (lamp_x, -length / 2 - 0.02, body_z), (1.0, 0.9, 0.2)))
    parts.append(_box((0.2, 0.04, 0.1), (lamp_x, length / 2 + 0.02, body_z), (0.8, 0.05, 0.05)))
  return parts


def _bookshelf(rng: np.random.Generator) -> list[MeshPart]:
  """A frame open at the front (-y) with a back panel, shelves and a few books."""
  width, depth, height = rng.uniform(0.8, 1.6), rng.uniform(0.3, 0.5), rng.uniform(1.2, 2.2)
  shelves, wood, t = int(rng.integers(2, 5)), _color(rng), 0.05
  parts = [_box((width, t, height), (0, depth / 2, height / 2), wood)]
  parts += [_box((t, depth, height), (x * width / 2, 0, height / 2), wood) for x in (-1, 1)]
  levels = np.linspace(0, height, shelves + 1)
  parts += [_box((width, depth, t), (0, 0, z), wood) for z in levels]
  for z0, z1 in zip(levels[:-1], levels[1:], strict=True):
    x = -width / 2 + t
    while x < width / 2 - 0.2 and rng.random() < 0.85:
      thick, tall = rng.uniform(0.04, 0.12), rng.uniform(0.5, 0.9) * (z1 - z0)
      parts.append(
          _box((thick, depth * 0.8, tall), (x + thick / 2, 0.0, z0 + tall / 2), _color(rng)))
      x += thick + rng.uniform(0.0, 0.1)
  return parts


def _cup(rng: np.random.Generator) -> list[MeshPart]:
  """An open cylinder with a bottom and a handle on its right side (+x)."""
  radius, height = rng.uniform(0.35, 0.5), rng.uniform(0.7, 1.2)
  color = _color(rng)
  wall = trimesh.creation.annulus(r_min=radius * 0.88, r_max=radius, height=height,
                                  sections=_SECTIONS)
  handle = trimesh.creation.torus(height * 0.28, height * 0.05, major_sections=_SECTIONS)
  handle.apply_transform(_axis_from_z("y")).apply_translation((radius, 0, height / 2))
  return [_piece(wall.apply_translation((0, 0, height / 2)), color),
          _cylinder(radius, 0.04, (0, 0, 0.02), color), _piece(handle, _color(rng))]


def _desk_lamp(rng: np.random.Generator) -> list[MeshPart]:
  """A base, a post, an arm reaching forward (-y) and a shade opening downwards at its end."""
  post, reach, metal = rng.uniform(0.8, 1.4), rng.uniform(0.6, 1.0), _color(rng)
  base_y = rng.uniform(0.0, 0.3)
  return [_cylinder(rng.uniform(0.25, 0.4), 0.08, (0, base_y, 0.04), metal),
          _cylinder(0.04, post, (0, base_y, post / 2), metal),
          _cylinder(0.04, reach, (0, base_y - reach / 2, post), metal, axis="y"),
          _cone(rng.uniform(0.2, 0.3), rng.uniform(0.25, 0.4), (0, base_y - reach, post - 0.3),
                _color(rng))]


def _bottle(rng: np.random.Generator) -> list[MeshPart]:
  """Body, shoulder, neck and cap, all round."""
  radius, body = rng.uniform(0.25, 0.4), rng.uniform(0.8, 1.3)
  neck, glass = rng.uniform(0.3, 0.5), _color(rng)
  return [_cylinder(radius, body, (0, 0, body / 2), glass),
          _cone(radius, 0.25, (0, 0, body), glass),
          _cylinder(0.09, neck, (0, 0, body + 0.1 + neck / 2), glass),
          _cylinder(0.1, 0.08, (0, 0, body + 0.1 + neck), _color(rng))]


_BUILDERS = {"chair": _chair, "car": _car, "bookshelf": _bookshelf, "cup": _cup,
             "desk_lamp": _desk_lamp, "bottle": _bottle}


def make_shape(category: str, seed: int) -> TexturedMesh:
  """One random variant of ``category``, normalised to the unit sphere (front -y, z up)."""
  if category not in _BUILDERS:
    raise KeyError(f"Unknown primitive category {category!r}; known: {sorted(_BUILDERS)}.")
  return TexturedMesh(tuple(_BUILDERS[category](np.random.default_rng(seed)))).normalized()


def catalog(shapes_per_category: int, seed: int) -> list[tuple[str, str, int]]:
  """``(object_id, category, shape_seed)`` of ``shapes_per_category`` variants per category."""
  entries = []
  for category in CATEGORIES:
    for index in range(shapes_per_category):
      digest = hashlib.sha1(f"{seed}/{category}/{index}".encode()).digest()
      entries.append((f"primitive/{category}/{index}", category,
                      int.from_bytes(digest[:4], "little")))
  return entries


FACE_COLORS = {"front": (1.0, 0.0, 0.0), "right": (0.0, 1.0, 0.0), "top": (0.0, 0.0, 1.0)}


def marked_cube() -> TexturedMesh:
  """A cube whose front face (-y) is red, right face (+x) green, top (+z) blue, others grey.

  Each face is a thin slab, so a render shows which side faces the camera.
  """
  grey, half, t = (0.5, 0.5, 0.5), 0.5, 0.02
  parts = [_box((1.0, 1.0, 1.0), (0, 0, 0), grey),
           _box((1.0, t, 1.0), (0, -half - t / 2, 0), FACE_COLORS["front"]),
           _box((t, 1.0, 1.0), (half + t / 2, 0, 0), FACE_COLORS["right"]),
           _box((1.0, 1.0, t), (0, 0, half + t / 2), FACE_COLORS["top"])]
  return TexturedMesh(tuple(parts)).normalized()
