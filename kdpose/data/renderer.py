"""Headless rendering of textured meshes with pybullet's TinyRenderer, in the kdpose convention.

The camera is placed from a viewpoint (degrees, see ``kdpose/geometry.py``): with
``R = viewpoint_to_rotation(a, e, t)`` the camera sits at ``R^T @ [0, 0, d]`` in the object frame,
looks at the origin, and the image's up direction is ``R^T @ [0, 1, 0]``. So azimuth 0 looks at the
object's front (-y), azimuth 90 at its right side (+x), elevation > 0 from above, and a positive
in-plane angle turns the image content counter-clockwise.

TinyRenderer has no anti-aliasing, so images are rendered at ``supersample`` times the asked size
and box-filtered down; the object mask comes back as a soft alpha.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import trimesh
from PIL import Image

from kdpose import geometry
from kdpose.data import shapes

# pybullet refuses a visual shape above 131072 vertices; parts are uploaded in chunks below it
# (at most 3 vertices per face, twice for the two sides).
_MAX_CHUNK_FACES = 20_000


@dataclasses.dataclass(frozen=True, eq=False)
class MeshPart:
  """One material of a mesh: its triangles in the object frame and how they look.

  vertices: float32 [V, 3]; faces: int32 [F, 3]; normals: float32 [V, 3] (None: computed);
  color: rgb in [0, 1] used where there is no texture; uvs: float32 [V, 2] texture coordinates
  (OBJ convention, v pointing up); texture: uint8 [h, w, 3].
  """

  vertices: np.ndarray
  faces: np.ndarray
  color: tuple[float, float, float] = (0.7, 0.7, 0.7)
  normals: np.ndarray | None = None
  uvs: np.ndarray | None = None
  texture: np.ndarray | None = None

  def replace(self, **changes) -> MeshPart:
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True, eq=False)
class TexturedMesh:
  """A mesh made of parts, each with its own colour or texture (what the renderer draws)."""

  parts: tuple[MeshPart, ...]

  @property
  def vertices(self) -> np.ndarray:
    """All vertices ``[V, 3]`` (float64)."""
    return np.concatenate([np.asarray(p.vertices, np.float64) for p in self.parts])

  def transformed(self, matrix: np.ndarray) -> TexturedMesh:
    """Applies a linear map ``[3, 3]`` (a rotation) to the vertices and normals: ``v' = M v``."""
    matrix = np.asarray(matrix, np.float64)
    return TexturedMesh(tuple(
        p.replace(vertices=(p.vertices @ matrix.T).astype(np.float32),
                  normals=None if p.normals is None else (p.normals @ matrix.T).astype(np.float32))
        for p in self.parts))

  def turned(self, yaw_degrees: float) -> TexturedMesh:
    """Turned about z by ``yaw_degrees`` (counter-clockwise seen from above)."""
    yaw = np.deg2rad(yaw_degrees)
    return self.transformed(np.array([[np.cos(yaw), -np.sin(yaw), 0.0],
                                      [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]]))

  def normalized(self) -> TexturedMesh:
    """Centred on its bounding box and scaled into the unit sphere (``shapes.py``)."""
    if not self.parts:
      raise ValueError("A TexturedMesh needs at least one part.")
    flat = shapes.normalize_to_unit_sphere(self.vertices).astype(np.float32)
    splits = np.cumsum([len(p.vertices) for p in self.parts])[:-1]
    return TexturedMesh(tuple(
        p.replace(vertices=v) for p, v in zip(self.parts, np.split(flat, splits), strict=True)))

  def surface(self) -> trimesh.Trimesh:
    """All parts as one trimesh (for surface sampling)."""
    return trimesh.util.concatenate(
        [trimesh.Trimesh(p.vertices, p.faces, process=False) for p in self.parts])


MAX_TEXTURE_SIDE = 512  # pixels; larger textures are downscaled (renders are <= 224 px).


def texture_array(image: Image.Image) -> np.ndarray:
  """A texture for ``MeshPart``: uint8 RGB ``[h, w, 3]``, at most ``MAX_TEXTURE_SIDE`` a side."""
  image = image.convert("RGB")
  if max(image.size) > MAX_TEXTURE_SIDE:
    image.thumbnail((MAX_TEXTURE_SIDE, MAX_TEXTURE_SIDE), Image.Resampling.BILINEAR)
  return np.asarray(image, np.uint8)


@dataclasses.dataclass(frozen=True)
class Lighting:
  """A directional light. direction: [3] towards the light, in the camera frame (x right, y up,
  z towards the viewer); coefficients as in pybullet's TinyRenderer."""

  direction: tuple[float, float, float] = (0.3, 0.6, 1.0)
  ambient: float = 0.6
  diffuse: float = 0.5
  specular: float = 0.05


def random_lighting(rng: np.random.Generator) -> Lighting:
  """A light from the camera's hemisphere (mostly from above), with random shading strengths."""
  direction = rng.normal(size=3) * (0.7, 0.5, 0.3) + (0.0, 0.5, 1.0)
  return Lighting(
      direction=tuple(float(x) for x in direction / np.linalg.norm(direction)),
      ambient=float(rng.uniform(0.35, 0.7)),
      diffuse=float(rng.uniform(0.3, 0.7)),
      specular=float(rng.uniform(0.0, 0.15)))


@dataclasses.dataclass(frozen=True)
class Rendering:
  """color: float32 [H, W, 3] in [0, 1], premultiplied by alpha; alpha: float32 [H, W], the
  object's coverage of each pixel (its soft mask)."""

  color: np.ndarray
  alpha: np.ndarray

  def composite(self, background: np.ndarray) -> np.ndarray:
    """The rendering over a uint8 ``[H, W, 3]`` background -> uint8 ``[H, W, 3]``."""
    out = self.color + background.astype(np.float32) / 255.0 * (1.0 - self.alpha[..., None])
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def camera_pose(viewpoint, distance: float) -> tuple[np.ndarray, np.ndarray]:
  """Camera position ``[3]`` and image-up direction ``[3]`` in the object frame.

  viewpoint: [3] azimuth, elevation, in-plane (degrees); distance: from the object's origin.
  """
  rot = np.asarray(geometry.viewpoint_to_rotation(*np.asarray(viewpoint, np.float64)), np.float64)
  return rot.T @ np.array([0.0, 0.0, distance]), rot.T @ np.array([0.0, 1.0, 0.0])


def _import_pybullet():
  try:
    import pybullet
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "kdpose.data.renderer needs pybullet for its TinyRenderer: `pip install pybullet`.") from e
  return pybullet


def _part_normals(part: MeshPart) -> tuple[np.ndarray, np.ndarray]:
  """Faces ``[F, 3]`` without twin copies and vertex normals ``[V, 3]``, filling missing ones.

  Some OBJ files hold every face twice, once per winding, on shared vertices: their computed
  normals cancel out, so the twins are dropped (the renderer draws both sides anyway). Missing
  normals are computed from the winding, and given ones are turned to agree with it.
  """
  _, first = np.unique(np.sort(part.faces, axis=1), axis=0, return_index=True)
  faces = part.faces[np.sort(first)]
  # Normals from the winding: the side that TinyRenderer draws.
  computed = trimesh.Trimesh(part.vertices, faces, process=False).vertex_normals
  if part.normals is None:
    return faces, np.asarray(computed, np.float32)
  normals = np.where(~(np.linalg.norm(part.normals, axis=1) > 1e-6)[:, None], computed,
                     part.normals)
  # A file normal pointing against its winding would light the drawn side from behind.
  flip = np.sum(normals * computed, axis=1) < 0
  return faces, np.where(flip[:, None], -normals, normals).astype(np.float32)


def closed_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
  """bool ``[F]``: faces of closed, consistently wound surfaces wound outwards (positive volume),
  which can never be seen from behind. Vertices ``[V, 3]`` at one position count as one."""
  _, merged = np.unique(np.round(vertices, 6), axis=0, return_inverse=True)
  f = merged.reshape(-1)[faces].astype(np.int64)
  starts, ends = f.reshape(-1), np.roll(f, -1, axis=1).reshape(-1)  # edge i belongs to face i//3.
  key, reverse = starts * (f.max() + 1) + ends, ends * (f.max() + 1) + starts
  order = np.argsort(key, kind="stable")
  sorted_keys = key[order]
  counts = np.diff(np.searchsorted(sorted_keys, [key, key + 1]), axis=0)[0]
  at = np.clip(np.searchsorted(sorted_keys, reverse), 0, len(key) - 1)
  partner = order[at]  # the edge running the other way, where there is one.
  paired = (counts == 1) & (sorted_keys[at] == reverse) & (counts[partner] == 1)
  edge_face = np.arange(len(key)) // 3
  graph = scipy.sparse.coo_matrix(
      (np.ones(paired.sum()), (edge_face[paired], edge_face[partner[paired]])),
      shape=(len(faces), len(faces)))
  num, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
  open_faces = ~paired.reshape(-1, 3).all(axis=1)
  v = np.asarray(vertices, np.float64)[faces]
  volume = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2]))
  closed = np.bincount(labels, weights=open_faces, minlength=num) == 0
  outward = np.bincount(labels, weights=volume, minlength=num) > 0
  return (closed & outward)[labels]


def _face_chunks(part: MeshPart):
  """Yields (vertices, faces, normals, uvs) pieces of a part small enough for pybullet.

  TinyRenderer culls faces by winding, but many catalog surfaces are single sheets (a table top,
  a lamp shade): every face that is not on a closed outward surface also goes in reversed with its
  normal negated, so it is seen and lit from both sides. (A back copy costs TinyRenderer about as
  much as its face, measured: closed surfaces are left single.)
  """
  all_faces, normals = _part_normals(part)
  single = closed_faces(part.vertices, all_faces)
  for start in range(0, len(all_faces), _MAX_CHUNK_FACES):
    chunk = slice(start, start + _MAX_CHUNK_FACES)
    used, local = np.unique(all_faces[chunk], return_inverse=True)
    local = local.reshape(-1, 3)
    faces = np.concatenate([local, local[~single[chunk], ::-1] + len(used)])
    uvs = None if part.uvs is None else np.tile(part.uvs[used], (2, 1))
    yield (np.tile(part.vertices[used], (2, 1)), faces,
           np.concatenate([normals[used], -normals[used]]), uvs)


@dataclasses.dataclass
class _LoadedPart:
  bodies: list[int]
  texture_id: int | None  # its own texture, None: plain colour.
  color: tuple[float, float, float]
  has_uvs: bool


class Renderer:
  """Renders one loaded mesh at a time. Not thread-safe; one pybullet DIRECT client each.

  Usage: ``with Renderer(128) as r: r.load(mesh); r.render((30, 20, 0), 3.0, centered_window(40))``.
  """

  def __init__(self, size: int, supersample: int = 2):
    self._p = _import_pybullet()
    self.size, self.supersample = int(size), int(supersample)
    self._client = self._p.connect(self._p.DIRECT)
    self._parts: list[_LoadedPart] = []

  def close(self) -> None:
    if self._client is not None:
      self._p.disconnect(physicsClientId=self._client)
      self._client = None

  def __enter__(self) -> Renderer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  @property
  def num_parts(self) -> int:
    """Number of parts of the loaded mesh."""
    return len(self._parts)

  def part_has_uvs(self, index: int) -> bool:
    return self._parts[index].has_uvs

  def load_texture(self, image: np.ndarray) -> int:
    """Uploads a uint8 ``[h, w, 3]`` texture; returns its pybullet id, valid until ``load``."""
    # TinyRenderer reads textures from files only, into memory: the file can go at once.
    handle, path = tempfile.mkstemp(suffix=".png", prefix="kdpose_texture_")
    try:
      with os.fdopen(handle, "wb") as f:
        Image.fromarray(np.ascontiguousarray(image[..., :3])).save(f, "PNG", compress_level=1)
      return self._p.loadTexture(path, physicsClientId=self._client)
    finally:
      os.remove(path)

  def load(self, mesh: TexturedMesh) -> None:
    """Replaces the scene with ``mesh``: one visual body per part chunk, each with its texture."""
    p, cid = self._p, self._client
    p.resetSimulation(physicsClientId=cid)  # also frees the textures of the previous mesh.
    self._parts = []
    textures: dict[int, int] = {}  # id(texture array) -> pybullet id, shared between parts.
    for part in mesh.parts:
      texture_id = None
      if part.texture is not None and part.uvs is not None:
        if id(part.texture) not in textures:
          textures[id(part.texture)] = self.load_texture(part.texture)
        texture_id = textures[id(part.texture)]
      loaded = _LoadedPart([], texture_id, tuple(part.color), part.uvs is not None)
      for vertices, faces, normals, uvs in _face_chunks(part):
        extra = {} if uvs is None else {"uvs": uvs.tolist()}
        shape = p.createVisualShape(
            p.GEOM_MESH, vertices=vertices.tolist(), indices=faces.ravel().tolist(),
            normals=normals.tolist(), specularColor=[0.2, 0.2, 0.2], physicsClientId=cid, **extra)
        if shape < 0:
          raise RuntimeError(f"pybullet refused a visual shape of {len(vertices)} vertices.")
        loaded.bodies.append(
            p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, physicsClientId=cid))
      self._parts.append(loaded)
    self.restore_looks()

  def set_look(self, index: int, *, texture_id: int | None = None, color=(1.0, 1.0, 1.0)) -> None:
    """Gives part ``index`` a texture (an id from ``load_texture``; None: none) tinted by ``color``
    (rgb in [0, 1]). Used for texture swaps; ``restore_looks`` undoes them."""
    for body in self._parts[index].bodies:
      self._p.changeVisualShape(
          body, -1, textureUniqueId=-1 if texture_id is None else texture_id,
          rgbaColor=[*color, 1.0], physicsClientId=self._client)

  def restore_looks(self) -> None:
    """Gives every part back its own texture or colour."""
    for index, part in enumerate(self._parts):
      if part.texture_id is None:
        self.set_look(index, color=part.color)
      else:
        self.set_look(index, texture_id=part.texture_id)

  def render(self, viewpoint, distance: float, window, lighting: Lighting = Lighting(),
             object_scale=None) -> Rendering:
    """Renders the loaded mesh.

    viewpoint: [3] azimuth, elevation, in-plane (degrees); distance: camera to object origin (the
    mesh lives in the unit sphere, so > 1.5); window: (left, right, bottom, top) of the rendered
    square on the image plane at unit distance (``centered_window(fov)`` for a plain camera; an
    off-centre window is a crop of a larger picture: the viewpoint label does not change).
    object_scale: optional [3] factors stretching the mesh along its own x, y, z before the view
    (the viewpoint label does not change; keep them within [0.75, 1.35] so that the mesh stays
    inside the clipping planes).
    Returns a ``Rendering`` of ``size x size`` pixels.
    """
    p = self._p
    if distance <= 1.5:
      raise ValueError(f"distance {distance} puts the camera inside the near plane (> 1.5 needed).")
    eye, up = camera_pose(viewpoint, distance)
    rot = np.asarray(geometry.viewpoint_to_rotation(*np.asarray(viewpoint, np.float64)))
    light = rot.T @ np.asarray(lighting.direction, np.float64)  # camera frame -> object frame.
    near, far = distance - 1.5, distance + 1.5
    full = self.size * self.supersample
    view = p.computeViewMatrix(eye.tolist(), [0.0, 0.0, 0.0], up.tolist())  # column-major.
    if object_scale is not None:
      stretched = np.reshape(view, (4, 4)).T @ np.diag([*np.asarray(object_scale, float), 1.0])
      view = stretched.T.reshape(-1).tolist()
    _, _, rgba, _, seg = p.getCameraImage(
        full, full,
        viewMatrix=view,
        projectionMatrix=p.computeProjectionMatrix(*(float(w) * near for w in window), near, far),
        lightDirection=(light * 10.0).tolist(), lightColor=[1.0, 1.0, 1.0], lightDistance=10.0,
        shadow=0, lightAmbientCoeff=lighting.ambient, lightDiffuseCoeff=lighting.diffuse,
        lightSpecularCoeff=lighting.specular, renderer=p.ER_TINY_RENDERER,
        physicsClientId=self._client)
    rgb = np.asarray(rgba, np.uint8).reshape(full, full, 4)[..., :3].astype(np.float32) / 255.0
    mask = (np.asarray(seg).reshape(full, full) >= 0).astype(np.float32)
    return Rendering(color=_downsample(rgb * mask[..., None], self.supersample),
                     alpha=_downsample(mask, self.supersample))


def centered_window(fov: float) -> tuple[float, float, float, float]:
  """The image-plane window (left, right, bottom, top) of a square camera with ``fov`` degrees."""
  half = float(np.tan(np.deg2rad(fov) / 2.0))
  return (-half, half, -half, half)


def project_points(points: np.ndarray, viewpoint, distance: float) -> np.ndarray:
  """Perspective image-plane coordinates ``[N, 2]`` (x right, y up, unit focal length) of object
  points ``[N, 3]`` seen from ``viewpoint`` (degrees) at ``distance``."""
  rot = np.asarray(geometry.viewpoint_to_rotation(*np.asarray(viewpoint, np.float64)), np.float64)
  cam = np.asarray(points, np.float64) @ rot.T - np.array([0.0, 0.0, distance])
  return cam[:, :2] / -cam[:, 2:3]


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
  """Box filter: ``[H*f, W*f, ...] -> [H, W, ...]`` (the anti-aliasing of supersampling)."""
  h, w = image.shape[0] // factor, image.shape[1] // factor
  return image.reshape(h, factor, w, factor, *image.shape[2:]).mean(axis=(1, 3))
