"""Shape point clouds: normalising CAD meshes and sampling their surface."""

from __future__ import annotations

import numpy as np
import trimesh


def normalize_to_unit_sphere(vertices: np.ndarray) -> np.ndarray:
  """Centres vertices ``[V, 3]`` on their bounding-box centre and scales the farthest to norm 1."""
  vertices = np.asarray(vertices, dtype=np.float64)
  centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2.0
  centred = vertices - centre
  radius = np.linalg.norm(centred, axis=1).max()
  if not np.isfinite(radius) or radius <= 0:
    raise ValueError(f"Degenerate mesh: {len(vertices)} vertices with radius {radius}.")
  return centred / radius


def sample_surface_points(mesh: trimesh.Trimesh, num_points: int, seed: int) -> np.ndarray:
  """``[num_points, 3]`` float32 points drawn uniformly (by area) on the mesh surface, seeded."""
  if mesh.faces is None or len(mesh.faces) == 0 or mesh.area <= 0:
    raise ValueError("Mesh has no surface to sample (no faces or zero area).")
  points, _ = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
  return np.asarray(points, dtype=np.float32)
