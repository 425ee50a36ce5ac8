"""Shape point clouds of the real benchmarks' CAD models (.off, .obj), sampled once per model.

Many objects share one CAD model (ObjectNet3D: 201,888 objects, 791 models), so a build keeps a
`PointCache`: each model is loaded, normalised to the unit sphere and sampled the first time an
object refers to it. The sampling seed comes from the model's path relative to the manual dir,
so a rebuild anywhere stores the same points.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import trimesh

from kdpose.data import shapes
from kdpose.data.crops import RawDataError


def load_mesh(path: str) -> trimesh.Trimesh:
  """Loads an .off/.obj file as one triangle mesh (parts of a scene merged).

  Raises ValueError (naming the file) when it cannot be read or has no triangles.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"CAD model {path} does not exist.")
  try:  # Materials only cost time (and warnings about missing textures): points need geometry.
    mesh = trimesh.load(path, force="mesh", process=False, skip_materials=True)
  except Exception as error:  # trimesh raises many types on malformed files.
    raise ValueError(f"Cannot read CAD model {path}: {error}") from error
  if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
    raise ValueError(f"CAD model {path} has no triangles.")
  if mesh.faces.max() >= len(mesh.vertices) or mesh.faces.min() < 0:
    raise ValueError(f"CAD model {path} has faces indexing missing vertices.")
  return mesh


def model_points(mesh: trimesh.Trimesh, num_points: int, seed: int,
                 to_object_frame: np.ndarray | None = None) -> np.ndarray:
  """``[num_points, 3]`` float32 surface samples of ``mesh`` in the unit sphere.

  ``to_object_frame`` (``[3, 3]``) rotates the model's vertices into kdpose's object frame first.
  """
  vertices = np.asarray(mesh.vertices, np.float64)
  if to_object_frame is not None:
    vertices = vertices @ np.asarray(to_object_frame, np.float64).T
  normalised = trimesh.Trimesh(shapes.normalize_to_unit_sphere(vertices), mesh.faces,
                               process=False)
  return shapes.sample_surface_points(normalised, num_points, seed)


class PointCache:
  """Point clouds of the CAD models under ``root``, computed once per model during a build."""

  def __init__(self, root: str, num_points: int, to_object_frame: np.ndarray | None = None):
    self.root = root
    self.num_points = num_points
    self.to_object_frame = to_object_frame
    self._points: dict[str, np.ndarray | RawDataError] = {}

  def __len__(self) -> int:
    return len(self._points)

  def points(self, relative_path: str) -> np.ndarray:
    """Points ``[num_points, 3]`` of the model at ``root/relative_path``.

    Raises `RawDataError` when the model is missing or unusable.
    """
    key = os.path.normpath(relative_path)
    if key not in self._points:
      self._points[key] = self._load(key)
    found = self._points[key]
    if isinstance(found, RawDataError):  # a bad model is read once; later objects fail fast.
      raise RawDataError(found.reason, found.path, found.detail)
    return found

  def _load(self, key: str) -> np.ndarray | RawDataError:
    path = os.path.join(self.root, key)
    try:
      mesh = load_mesh(path)
      seed = zlib.crc32(key.replace(os.sep, "/").encode())
      return model_points(mesh, self.num_points, seed, self.to_object_frame)
    except FileNotFoundError:
      return RawDataError("missing CAD model", path)
    except ValueError as error:
      return RawDataError("unusable CAD model", path, str(error))
