r"""The figure of docs/conventions.md: what azimuth, elevation and in-plane rotation mean.

  python tools/viewpoint_figure.py --out docs/images/viewpoint_conventions.png

One procedural car of the ``tiny`` synthetic_views dataset (its first ``car`` shape: yellow
headlights at its front, -y; red rear lights at its back), rendered by kdpose's own renderer
(``kdpose/data/renderer.py``, the camera placed from the viewpoint as the dataset builder places
it) at five viewpoints. Over each render, the object's axes are drawn where the camera projects
them (``renderer.project_points``): x red (its right side), y green (its back), z blue (up), the
colours of ``kdpose.visualize`` and of ``kdpose.predict --visualize``.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from kdpose import geometry, visualize
from kdpose.data import renderer as renderer_lib
from kdpose.data import synthetic_views

_OUT = flags.DEFINE_string("out", "docs/images/viewpoint_conventions.png", "PNG to write.")
_SIZE = flags.DEFINE_integer("size", 256, "Pixels of each render.")

# (viewpoint [azimuth, elevation, in-plane] in degrees, caption lines).
PANELS = (
    ((0.0, 20.0, 0.0), ("azimuth 0, elevation 20", "the camera faces the front (-y)")),
    ((90.0, 20.0, 0.0), ("azimuth 90, elevation 20", "camera on the right side (+x):",
                         "the front points left")),
    ((180.0, 20.0, 0.0), ("azimuth 180, elevation 20", "the camera sees the back (+y)")),
    ((0.0, 60.0, 0.0), ("azimuth 0, elevation 60", "the camera higher above", "(elevation > 0)")),
    ((0.0, 20.0, 30.0), ("azimuth 0, elevation 20, in-plane 30", "the image turned 30 degrees",
                         "counter-clockwise")),
)
AXIS_LABELS = ("x right", "y back", "z up")
DISTANCE, FOV = 3.0, 45.0  # camera distance (the mesh fills the unit sphere) and field of view.
_CAPTION_LINES = 3


def tiny_car():
  """The first ``car`` shape of the tiny dataset's procedural catalogue (a TexturedMesh)."""
  config = next(c for c in synthetic_views.SyntheticViews.BUILDER_CONFIGS if c.name == "tiny")
  ref = next(r for r in synthetic_views.list_shapes(config) if r.category == "car")
  return ref.load()


def _to_pixels(plane: np.ndarray, size: int) -> np.ndarray:
  """Image-plane points ``[N, 2]`` (x right, y up, unit focal) -> pixels ``[N, 2]`` (y down)."""
  half = np.tan(np.deg2rad(FOV) / 2.0)
  return np.stack([(plane[:, 0] / half + 1.0) / 2.0 * size,
                   (1.0 - plane[:, 1] / half) / 2.0 * size], axis=1)


def draw_axes(image: np.ndarray, viewpoint, font) -> Image.Image:
  """The object axes (length 0.8, from the origin) projected over a uint8 ``[S, S, 3]`` render."""
  size = image.shape[0]
  points = np.concatenate([np.zeros((1, 3)), 0.8 * np.eye(3)])  # origin, x, y, z tips.
  pixels = _to_pixels(renderer_lib.project_points(points, viewpoint, DISTANCE), size)
  rot = np.asarray(geometry.viewpoint_to_rotation(*np.asarray(viewpoint, np.float64)))
  pil = Image.fromarray(image)
  draw = ImageDraw.Draw(pil)
  placed = []  # (x, y, width) of the labels drawn so far.
  for axis in np.argsort(rot[2]):  # farthest from the camera first.
    start, end = tuple(pixels[0]), tuple(pixels[axis + 1])
    draw.line([start, end], fill=visualize.AXIS_COLORS[axis], width=3)
    draw.ellipse([end[0] - 3, end[1] - 3, end[0] + 3, end[1] + 3],
                 fill=visualize.AXIS_COLORS[axis])
    # The label centred just beyond the tip, kept inside the panel.
    delta = np.subtract(end, start)
    length = float(np.linalg.norm(delta))
    direction = delta / length if length > 12 else np.array([0.6, -0.8])
    width = draw.textlength(AXIS_LABELS[axis], font=font)
    center = np.add(end, direction * (0.5 * width * abs(direction[0]) + 9 * abs(direction[1]) + 6))
    center[0] = np.clip(center[0], width / 2 + 2, size - width / 2 - 2)
    while any(abs(center[0] - x) < (width + w) / 2 and abs(center[1] - y) < 14
              for x, y, w in placed):  # another label there: move this one down.
      center[1] += 14
    placed.append((center[0], center[1], width))
    draw.text(tuple(center), AXIS_LABELS[axis], fill=visualize.AXIS_COLORS[axis], font=font,
              anchor="mm", stroke_width=2, stroke_fill=(255, 255, 255))
  return pil


def figure(size: int) -> Image.Image:
  """Every panel of ``PANELS`` side by side, a caption under each."""
  font = ImageFont.load_default(size=max(10, size // 18))
  line_h = max(12, size // 14)
  caption_h = _CAPTION_LINES * line_h + 6
  sheet = Image.new("RGB", (len(PANELS) * size, size + caption_h), "white")
  draw = ImageDraw.Draw(sheet)
  with renderer_lib.Renderer(size) as renderer:
    renderer.load(tiny_car())
    for index, (viewpoint, caption) in enumerate(PANELS):
      rendering = renderer.render(np.asarray(viewpoint), DISTANCE,
                                  renderer_lib.centered_window(FOV))
      render = rendering.composite(np.full((size, size, 3), 255, np.uint8))
      sheet.paste(draw_axes(render, viewpoint, font), (index * size, 0))
      draw.rectangle([index * size, 0, (index + 1) * size - 1, size - 1], outline=(190, 190, 190))
      for line, text in enumerate(caption):
        draw.text((index * size + 6, size + 3 + line * line_h), text, fill=(0, 0, 0), font=font)
  return sheet


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  figure(_SIZE.value).save(_OUT.value, optimize=True)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
