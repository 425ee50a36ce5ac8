"""Backgrounds to composite renders on: real photos, or procedural images where there are none.

Photos come from Debian packages: ``plasma-workspace-wallpapers`` (``/usr/share/wallpapers/<name>/
contents/images/<W>x<H>.<ext>``, one size kept per wallpaper), ``mate-backgrounds``
(``/usr/share/backgrounds/mate/<theme>/*``), plus texture photos of the Sweet Home 3D furniture
catalog. A background is a random crop of a random image, resized to the asked size.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from kdpose.data import sweethome3d

WALLPAPER_DIR = "/usr/share/wallpapers"
MATE_DIR = "/usr/share/backgrounds/mate"
INSTALL_HINT = "apt-get install plasma-workspace-wallpapers mate-backgrounds"
MAX_SIDE = 640  # pixels; photos are downscaled once when loaded (crops are <= 224 px).
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def wallpaper_paths(wallpaper_dir: str = WALLPAPER_DIR, mate_dir: str = MATE_DIR) -> list[str]:
  """Paths of distinct photos: per Plasma wallpaper the smallest size >= 1024 px wide (else the
  largest), and every MATE background except smaller copies of the same picture."""
  paths = []
  for folder in sorted(glob.glob(os.path.join(wallpaper_dir, "*", "contents", "images"))):
    sized = []
    for path in os.listdir(folder):
      match = re.match(r"(\d+)x(\d+)\.", path)
      if match and path.lower().endswith(_IMAGE_EXTENSIONS):
        sized.append((int(match.group(1)), os.path.join(folder, path)))
    if sized:
      large = sorted(s for s in sized if s[0] >= 1024)
      paths.append(large[0][1] if large else max(sized)[1])
  by_picture = {}
  for path in sorted(glob.glob(os.path.join(mate_dir, "**", "*"), recursive=True)):
    if path.lower().endswith(_IMAGE_EXTENSIONS):
      # "Elephants_3840x2160.jpg" and "Elephants.jpg" are one picture.
      key = re.sub(r"_\d+x\d+$", "", os.path.splitext(path)[0])
      by_picture.setdefault(key, path)
  return paths + sorted(by_picture.values())


def _load_photo(path: str, max_side: int) -> np.ndarray:
  with Image.open(path) as image:
    image.draft("RGB", (max_side, max_side))  # fast JPEG downscaling while decoding.
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8)


class Backgrounds:
  """A pool of uint8 ``[h, w, 3]`` images to crop backgrounds from; empty means procedural."""

  def __init__(self, images: Sequence[np.ndarray], source: str):
    self.images, self.source = list(images), source

  def __len__(self) -> int:
    return len(self.images)

  def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
    """A uint8 ``[size, size, 3]`` background: a random crop (10-70% of the shorter side),
    randomly flipped and brightened, or a procedural image when the pool is empty."""
    if not self.images:
      return procedural_image(rng, size)
    image = self.images[int(rng.integers(len(self.images)))]
    h, w = image.shape[:2]
    side = max(8, int(min(h, w) * rng.uniform(0.1, 0.7)))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(image[y:y + side, x:x + side]).resize(
        (size, size), Image.Resampling.BILINEAR)
    out = np.asarray(crop, np.float32) * rng.uniform(0.7, 1.2)
    if rng.random() < 0.5:
      out = out[:, ::-1]
    return np.clip(out, 0, 255).astype(np.uint8)


def load_backgrounds(source: str, *, max_side: int = MAX_SIDE, num_textures: int = 48,
                     furniture_dir: str = sweethome3d.FURNITURE_DIR) -> Backgrounds:
  """``source`` "photos": wallpapers plus furniture textures (procedural, with a warning, when
  none is installed); "procedural": generated images only."""
  if source == "procedural":
    return Backgrounds([], "procedural")
  if source != "photos":
    raise ValueError(f"Unknown background source {source!r}: use 'photos' or 'procedural'.")
  images = [_load_photo(path, max_side) for path in wallpaper_paths()]
  if os.path.isdir(furniture_dir):
    images += sweethome3d.texture_images(furniture_dir, limit=num_textures)
  if not images:
    logging.warning("No background photos found (%s, %s, %s): using procedural backgrounds; "
                    "for real photos: %s.", WALLPAPER_DIR, MATE_DIR, furniture_dir, INSTALL_HINT)
    return Backgrounds([], "procedural")
  return Backgrounds(images, "photos")


def procedural_image(rng: np.random.Generator, size: int) -> np.ndarray:
  """A uint8 ``[size, size, 3]`` image: a two-colour gradient, smooth noise and a few blobs."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
  angle = rng.uniform(0, 2 * np.pi)
  t = np.clip((np.cos(angle) * xx + np.sin(angle) * yy + 1.0) / 2.0, 0, 1)[..., None]
  c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
  image = c0 * (1 - t) + c1 * t
  for cells in (4, 16):  # smooth value noise at two scales.
    grid = Image.fromarray(rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8))
    noise = np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), np.float32)
    image += (noise - 127.5) * rng.uniform(0.1, 0.4)
  for _ in range(int(rng.integers(0, 4))):
    cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
    blob = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2)[..., None]
    image = np.where(blob, image * 0.5 + rng.uniform(0, 255, 3) * 0.5, image)
  return np.clip(image, 0, 255).astype(np.uint8)
