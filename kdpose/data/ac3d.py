"""A reader of AC3D (``.ac``, and TORCS's ``.acc``) models into textured meshes.

AC3D is a text format: ``MATERIAL`` lines, then a tree of ``OBJECT`` blocks, each with optional
``name``, ``data``, ``texture``, ``texrep``, ``texoff``, ``rot`` (a 3x3 matrix row by row), ``loc``,
``crease``, ``url``, ``numvert`` (vertex lines), ``numsurf`` (``SURF``/``mat``/``refs`` blocks whose
lines are ``vertex_index u v``; TORCS adds more ``u v`` pairs for its extra texture layers) and
``kids``. A child's vertices are in its parent's frame moved by the child's ``rot`` and ``loc``:
``v_parent = rot @ v + loc`` (as OpenSceneGraph's reader, which FlightGear uses, reads it). Polygons
are fanned into triangles and TORCS's triangle strips (``SURF`` type 4) unrolled; lines (types
1 and 2) are skipped.

The result keeps AC3D's own axes; a mesh source applies its convention (``mesh_sources.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from kdpose.data.renderer import MeshPart, TexturedMesh, texture_array

_POLYGON, _TRIANGLE_STRIP = 0, 4  # SURF types (low 4 bits) with area; 1 and 2 are lines.
# A texture file name -> uint8 [h, w, 3] image, or None when it cannot be read.
TextureLoader = Callable[[str], "np.ndarray | None"]


class AC3DError(ValueError):
  """A file that is not valid AC3D; the message names the file and line."""


class _Lines:
  """The non-empty lines of a file, with the line number for messages."""

  def __init__(self, text: str, path: str):
    self._lines = text.splitlines()
    self._index = 0
    self.path = path

  def next(self) -> list[str]:
    while self._index < len(self._lines):
      line = self._lines[self._index].strip()
      self._index += 1
      if line:
        return _split(line)
    raise AC3DError(f"{self.path}: the file ends early (after line {self._index}).")

  def raw(self, count: int) -> None:
    """Skips ``count`` characters of a ``data`` block (which may span lines)."""
    remaining = count
    while remaining > 0 and self._index < len(self._lines):
      remaining -= len(self._lines[self._index]) + 1
      self._index += 1

  def error(self, what: str) -> AC3DError:
    return AC3DError(f"{self.path}:{self._index}: {what}")

  @property
  def done(self) -> bool:
    return all(not line.strip() for line in self._lines[self._index:])


def _split(line: str) -> list[str]:
  """Splits on blanks, keeping "quoted strings" whole (without the quotes)."""
  tokens, rest = [], line
  while rest:
    rest = rest.lstrip()
    if not rest:
      break
    if rest[0] == '"':
      end = rest.find('"', 1)
      end = len(rest) if end < 0 else end
      tokens.append(rest[1:end])
      rest = rest[end + 1:]
    else:
      token, _, rest = rest.partition(" ")
      tokens.append(token.split("\t")[0])
      if "\t" in token:
        rest = token.split("\t", 1)[1] + " " + rest
  return tokens


def _material_color(tokens: list[str], lines: _Lines) -> tuple[float, float, float]:
  try:
    at = tokens.index("rgb")
    return tuple(float(v) for v in tokens[at + 1:at + 4])
  except (ValueError, IndexError) as e:
    raise lines.error(f"a MATERIAL without rgb: {' '.join(tokens)}") from e


# One triangle soup per (material, texture): positions [n, 3], uvs [n, 2], per output vertex.
_Batches = dict[tuple[int, str | None], tuple[list[np.ndarray], list[np.ndarray]]]


def _read_object(lines: _Lines, rotation: np.ndarray, offset: np.ndarray, batches: _Batches,
                 texture_rep: tuple[float, float] = (1.0, 1.0)) -> None:
  """Reads one OBJECT block (after its ``OBJECT`` line) and its kids into ``batches``."""
  local_rot, local_loc, texture, vertices = np.eye(3), np.zeros(3), None, np.zeros((0, 3))
  rep, off = np.array(texture_rep), np.zeros(2)
  while True:
    tokens = lines.next()
    key = tokens[0]
    if key == "kids":
      for _ in range(int(tokens[1])):
        if lines.done:  # some exporters count more kids than they write.
          break
        head = lines.next()
        if head[0] != "OBJECT":
          raise lines.error(f"expected OBJECT, got {head[0]!r}")
        _read_object(lines, local_rot @ rotation, local_loc @ rotation + offset, batches)
      return
    if key in ("name", "crease", "url", "subdiv", "folded", "hidden", "locked"):
      continue
    if key == "data":
      lines.raw(int(tokens[1]))
    elif key == "texture":
      texture = tokens[1] if len(tokens) > 1 else None
    elif key == "texrep":
      rep = np.array([float(tokens[1]), float(tokens[2])])
    elif key == "texoff":
      off = np.array([float(tokens[1]), float(tokens[2])])
    elif key == "rot":
      local_rot = np.array([float(v) for v in tokens[1:10]]).reshape(3, 3).T  # acts on rows.
    elif key == "loc":
      local_loc = np.array([float(v) for v in tokens[1:4]])
    elif key == "numvert":
      count = int(tokens[1])
      vertices = np.array([[float(v) for v in lines.next()[:3]] for _ in range(count)])
      vertices = vertices.reshape(count, 3) @ local_rot @ rotation + local_loc @ rotation + offset
    elif key == "numsurf":
      for _ in range(int(tokens[1])):
        _read_surface(lines, vertices, texture, rep, off, batches)
    else:
      raise lines.error(f"unknown OBJECT field {key!r}")


def _read_surface(lines: _Lines, vertices: np.ndarray, texture: str | None, rep: np.ndarray,
                  off: np.ndarray, batches: _Batches) -> None:
  head = lines.next()
  if head[0] != "SURF":
    raise lines.error(f"expected SURF, got {head[0]!r}")
  kind = int(head[1], 0) & 0xF
  material, count = 0, 0
  while True:
    tokens = lines.next()
    if tokens[0] == "mat":
      material = int(tokens[1])
    elif tokens[0] == "refs":
      count = int(tokens[1])
      break
    else:
      raise lines.error(f"unknown SURF field {tokens[0]!r}")
  refs = [lines.next() for _ in range(count)]
  if kind not in (_POLYGON, _TRIANGLE_STRIP) or count < 3:
    return  # a line or a degenerate polygon: no area to draw.
  try:
    index = np.array([int(r[0]) for r in refs])
    uv = np.array([[float(r[1]), float(r[2])] if len(r) >= 3 else [0.0, 0.0] for r in refs])
  except ValueError as e:
    raise lines.error(f"a bad refs line: {e}") from e
  if index.min() < 0 or index.max() >= len(vertices):
    raise lines.error(f"a surface refers to vertex {index.max()} of {len(vertices)}")
  first = np.arange(count - 2)
  if kind == _POLYGON:
    corners = np.stack([np.zeros(count - 2, int), first + 1, first + 2], -1)  # a fan.
  else:  # a strip: every other triangle swaps two corners to keep the winding.
    odd = first % 2 == 1
    corners = np.stack([first, np.where(odd, first + 2, first + 1),
                        np.where(odd, first + 1, first + 2)], -1)
  positions, uvs = batches.setdefault((material, texture), ([], []))
  positions.append(vertices[index[corners]].reshape(-1, 3))
  uvs.append((uv[corners] * rep + off).reshape(-1, 2))


def parse(text: str, path: str, load_texture: TextureLoader | None = None) -> TexturedMesh:
  """The AC3D ``text`` (read from ``path``, named in errors) as a mesh in the file's axes: one
  part per (material, texture), flat triangles, textures through ``load_texture``."""
  lines = _Lines(text, path)
  header = lines.next()
  if not header[0].startswith("AC3D"):
    raise AC3DError(f"{path}: not an AC3D file (starts with {header[0][:10]!r}).")
  colors: list[tuple[float, float, float]] = []
  batches: _Batches = {}
  while not lines.done:
    tokens = lines.next()
    if tokens[0] == "MATERIAL":
      colors.append(_material_color(tokens, lines))
    elif tokens[0] == "OBJECT":
      _read_object(lines, np.eye(3), np.zeros(3), batches)
    else:
      raise lines.error(f"unexpected {tokens[0]!r} at the top level")
  parts = list(_parts(batches, colors, load_texture or (lambda name: None)))
  if not parts:
    raise AC3DError(f"{path}: no polygons.")
  return TexturedMesh(tuple(parts))


def _parts(batches: _Batches, colors: list, load_texture: TextureLoader) -> Iterator[MeshPart]:
  images: dict[str, np.ndarray | None] = {}
  for (material, texture), (positions, uvs) in sorted(
      batches.items(), key=lambda item: (item[0][0], item[0][1] or "")):
    vertices = np.concatenate(positions).astype(np.float32)
    faces = np.arange(len(vertices), dtype=np.int32).reshape(-1, 3)
    color = colors[material] if 0 <= material < len(colors) else (0.7, 0.7, 0.7)
    image = None
    if texture:
      if texture not in images:
        images[texture] = load_texture(texture)
      image = images[texture]
    yield MeshPart(vertices, faces, color=tuple(float(c) for c in color),
                   uvs=None if image is None else np.concatenate(uvs).astype(np.float32),
                   texture=image)


def read(path: str, load_texture: TextureLoader | None = None) -> TexturedMesh:
  """Reads an AC3D file; textures are looked up beside it unless ``load_texture`` is given."""
  with open(path, encoding="latin-1") as f:
    text = f.read()
  return parse(text, path, load_texture or texture_beside(path))


def texture_beside(path: str) -> TextureLoader:
  """A loader of textures named relative to the model's folder (SGI ``.rgb``, PNG, JPEG...);
  falls back to the same name with other extensions; None when none can be read."""
  folder = os.path.dirname(path)

  def load(name: str) -> np.ndarray | None:
    base = os.path.join(folder, name.replace("\\", "/"))
    stem = os.path.splitext(base)[0]
    for candidate in (base, stem + ".png", stem + ".rgb", stem + ".jpg"):
      if os.path.isfile(candidate):
        try:
          return texture_array(Image.open(candidate))
        except (OSError, ValueError):
          return None
    return None

  return load
