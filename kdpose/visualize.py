"""Pictures of viewpoints: an object's axes drawn over an image, and contact sheets of many images.

The axes are the object's x (red, its right side), y (green, its back: the front faces -y) and
z (blue, up), rotated into the camera frame with ``geometry.viewpoint_to_rotation`` and drawn with
an orthographic projection (camera x right, y up in the image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from kdpose import geometry

AXIS_COLORS = ((230, 40, 40), (40, 200, 40), (50, 90, 255))  # x, y, z.


def _axes_2d(viewpoint) -> np.ndarray:
  """Image-plane directions ``[3, 2]`` (x right, y down) and depths ``[3]`` of the object axes."""
  rot = np.asarray(geometry.viewpoint_to_rotation(*np.asarray(viewpoint, np.float64)), np.float64)
  # Column i of rot is object axis i in camera coordinates.
  return np.stack([rot[0], -rot[1]], axis=1), rot[2]


def _dashed_line(draw: ImageDraw.ImageDraw, start, end, color, width: int, dash: float) -> None:
  start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
  length = float(np.linalg.norm(end - start))
  steps = max(1, int(length / dash))
  for i in range(0, steps, 2):
    a = start + (end - start) * i / steps
    b = start + (end - start) * min(i + 1, steps) / steps
    draw.line([tuple(a), tuple(b)], fill=color, width=width)


def draw_viewpoint_axes(
    image: np.ndarray,
    viewpoint,
    *,
    center: tuple[float, float] | None = None,
    length: float | None = None,
    reference=None,
    width: int | None = None,
) -> np.ndarray:
  """Draws the object axes of ``viewpoint`` over ``image``.

  image: uint8 [H, W, 3]. viewpoint: [3] azimuth, elevation, in-plane (degrees). center: (x, y)
  pixel where the axes start (default: the image centre). length: axis length in pixels (default:
  a third of the smaller side). reference: an optional second viewpoint [3] (e.g. the ground truth
  under a prediction) drawn dashed and thinner. Returns a new uint8 [H, W, 3] image.
  """
  pil = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
  h, w = pil.height, pil.width
  center = np.asarray(center if center is not None else (w / 2.0, h / 2.0), np.float64)
  length = float(length if length is not None else min(h, w) / 3.0)
  width = int(width if width is not None else max(1, round(min(h, w) / 64)))
  draw = ImageDraw.Draw(pil)
  layers = [(viewpoint, width, None)]
  if reference is not None:
    layers.insert(0, (reference, max(1, width // 2), max(3.0, length / 8)))
  for vp, line_width, dash in layers:
    directions, depth = _axes_2d(vp)
    for axis in np.argsort(depth):  # farthest first, so nearer axes are drawn on top.
      end = center + length * directions[axis]
      if dash is None:
        draw.line([tuple(center), tuple(end)], fill=AXIS_COLORS[axis], width=line_width)
      else:
        _dashed_line(draw, center, end, AXIS_COLORS[axis], line_width, dash)
  return np.asarray(pil)


def contact_sheet(
    images: Sequence[np.ndarray],
    viewpoints=None,
    labels: Sequence[str] | None = None,
    columns: int = 8,
    *,
    references=None,
    tile: int | None = None,
) -> np.ndarray:
  """A grid of images, each with its viewpoint axes and a label line under it.

  images: uint8 [H, W, 3] each (resized to ``tile`` x ``tile``, default the first image's height).
  viewpoints: [N, 3] degrees or None (no axes); references: [N, 3] second viewpoints drawn
  dashed; labels: N strings. Returns uint8 [rows * (tile + 12), columns * tile, 3].
  """
  if not len(images):
    raise ValueError("contact_sheet needs at least one image.")
  tile = int(tile or images[0].shape[0])
  label_h = 12 if labels is not None else 0
  columns = max(1, min(columns, len(images)))
  rows = -(-len(images) // columns)
  sheet = Image.new("RGB", (columns * tile, rows * (tile + label_h)), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for i, image in enumerate(images):
    cell = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).convert("RGB").resize(
        (tile, tile), Image.Resampling.BILINEAR))
    if viewpoints is not None:
      cell = draw_viewpoint_axes(cell, viewpoints[i],
                                 reference=None if references is None else references[i])
    x, y = (i % columns) * tile, (i // columns) * (tile + label_h)
    sheet.paste(Image.fromarray(cell), (x, y))
    if labels is not None:
      draw.text((x + 2, y + tile), str(labels[i])[: tile // 6], fill=(0, 0, 0))
  return np.asarray(sheet)
