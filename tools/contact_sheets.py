r"""Contact sheets of every model of the default dataset's mesh sources, at azimuth 0 and 90.

  python tools/contact_sheets.py --out tools/results/contact_sheets [--sources torcs,crrcsim]

Each model is drawn twice side by side on white, at elevation 20: azimuth 0 (the camera looks at
the object's front) and azimuth 90 (the camera on the object's +x side; the front points left).
A model whose front is not towards the camera in the left image is turned in its source's
``YAW_FIXES``. One JPEG per source and category, 8 models a row, labelled by index; the index
file ``<source>_<category>.txt`` names the models.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from kdpose.data import renderer as renderer_lib
from kdpose.data import synthetic_views

_OUT = flags.DEFINE_string("out", "tools/results/contact_sheets", "Output folder.")
_SOURCES = flags.DEFINE_list("sources", list(synthetic_views.DEFAULT_MESH_SOURCES),
                             "Mesh sources to draw.")
_SIZE = flags.DEFINE_integer("size", 96, "Pixels of each view.")
_PER_ROW = 8


def _views(renderer: renderer_lib.Renderer, mesh, size: int) -> np.ndarray:
  renderer.load(mesh)
  window = renderer_lib.centered_window(45.0)
  images = []
  for azimuth in (0.0, 90.0):
    rendering = renderer.render(np.array([azimuth, 20.0, 0.0]), 3.0, window)
    images.append(rendering.composite(np.full((size, size, 3), 255, np.uint8)))
  return np.concatenate(images, axis=1)


def _sheet(tiles: list[np.ndarray], size: int) -> Image.Image:
  rows = -(-len(tiles) // _PER_ROW)
  sheet = Image.new("RGB", (_PER_ROW * 2 * size, rows * size), "white")
  draw = ImageDraw.Draw(sheet)
  for index, tile in enumerate(tiles):
    x, y = (index % _PER_ROW) * 2 * size, (index // _PER_ROW) * size
    sheet.paste(Image.fromarray(tile), (x, y))
    draw.rectangle([x, y, x + 2 * size - 1, y + size - 1], outline=(180, 180, 180))
    draw.text((x + 2, y + 1), str(index), fill=(255, 0, 0))
  return sheet


def main(argv) -> None:
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  size = _SIZE.value
  for source in _SOURCES.value:
    config = synthetic_views.SyntheticViewsConfig(name="sheets", mesh_sources=(source,))
    by_category: dict[str, list] = {}
    for ref in synthetic_views.list_shapes(config):
      by_category.setdefault(ref.category, []).append(ref)
    with renderer_lib.Renderer(size) as renderer:
      for category, refs in sorted(by_category.items()):
        tiles, names = [], []
        for ref in refs:
          try:
            tiles.append(_views(renderer, ref.load(), size))
            names.append(ref.object_id)
          except ValueError as e:
            print(f"skipped {ref.object_id}: {e}")
        stem = os.path.join(_OUT.value, f"{source}_{category}")
        _sheet(tiles, size).save(stem + ".jpg", quality=80)
        with open(stem + ".txt", "w") as f:
          f.writelines(f"{i} {name}\n" for i, name in enumerate(names))
        print(f"{stem}.jpg: {len(tiles)} models")


if __name__ == "__main__":
  app.run(main)
