r"""Builds a `synthetic_views` configuration, prints a summary and writes a contact sheet.

  python tools/build_synthetic.py --config small --data_dir data/tfds
  python tools/build_synthetic.py --config tiny --data_dir /tmp/tfds

The summary gives images and shapes per split, category and source, build time, images per
second, size on disk and the skipped models; ``<data_dir>/synthetic_views_<config>_samples.png``
shows sample images of every split with their viewpoint axes (x red, y green, z blue).
"""

from __future__ import annotations

import collections
import os
import time

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from PIL import Image

from kdpose import visualize
from kdpose.data import features
from kdpose.data.synthetic_views import SPLITS, SyntheticViews

_CONFIG = flags.DEFINE_enum("config", "small", [c.name for c in SyntheticViews.BUILDER_CONFIGS],
                            "Builder config.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data directory.")
_SAMPLES = flags.DEFINE_integer("samples_per_split", 24, "Images per split on the sheet.")


def _dir_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def _split_table(builder, split: str) -> tuple[collections.Counter, dict[str, set], dict]:
  """(images per category, shapes per category, shapes per source) of a split."""
  source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
  names = builder.info.features["category"].names
  images, shapes = collections.Counter(), collections.defaultdict(set)
  for i in range(len(source)):
    record = source[i]
    category = names[int(record["category"])]
    images[category] += 1
    shapes[category].add(record["shape_id"].decode())
  by_source = collections.Counter(s.split("/")[0] for members in shapes.values() for s in members)
  return images, shapes, by_source


def _summary(builder, seconds: float | None) -> None:
  total = 0
  for split in SPLITS:
    images, shapes, by_source = _split_table(builder, split)
    total += sum(images.values())
    print(f"{split:5s}: {sum(images.values()):6d} images of {sum(map(len, shapes.values())):5d} "
          f"shapes in {len(images):3d} categories; shapes by source: "
          + ", ".join(f"{name} {n}" for name, n in sorted(by_source.items())))
    print("       shapes (images) per category: " + ", ".join(
        f"{name} {len(shapes[name])} ({n})" for name, n in sorted(images.items())))
  metadata = builder.info.metadata
  print(f"novel categories: {', '.join(metadata[features.NOVEL_CATEGORIES_KEY])}")
  symmetry = metadata[features.CATEGORY_SYMMETRY_KEY]
  print("symmetric categories: " + ", ".join(
      f"{name} ({kind})" for name, kind in sorted(symmetry.items())))
  print(f"backgrounds: {metadata.get('background_source')}")
  skipped = metadata.get("skipped_models", [])
  print(f"skipped models: {len(skipped)} {', '.join(skipped)}")
  if seconds is not None:
    print(f"build time: {seconds:.1f} s, {total / seconds:.1f} images/s")
  print(f"size on disk: {_dir_size(builder.data_dir) / 2**20:.1f} MiB ({builder.data_dir})")


def _contact_sheet(builder, path: str, per_split: int) -> None:
  names = builder.info.features["category"].names
  images, viewpoints, labels = [], [], []
  for split in SPLITS:
    source = builder.as_data_source(split)
    rng = np.random.default_rng(0)
    for index in sorted(rng.choice(len(source), min(per_split, len(source)), replace=False)):
      example = source[int(index)]
      images.append(example["image"])
      viewpoints.append(example["viewpoint"])
      a, e, t = example["viewpoint"]
      labels.append(f"{split[:2]} {names[int(example['category'])]} {a:.0f},{e:.0f},{t:.0f}")
  sheet = visualize.contact_sheet(images, np.stack(viewpoints), labels, columns=8,
                                  tile=max(128, images[0].shape[0]))
  Image.fromarray(sheet).save(path)
  print(f"contact sheet: {path}")


def main(argv) -> None:
  del argv
  data_dir = os.path.abspath(_DATA_DIR.value)
  builder = SyntheticViews(data_dir=data_dir, config=_CONFIG.value, file_format="array_record")
  seconds = None
  if builder.is_prepared():
    print(f"Already built: {builder.data_dir} (delete it to rebuild and time the build).")
  else:
    start = time.perf_counter()
    builder.download_and_prepare()
    seconds = time.perf_counter() - start
  _summary(builder, seconds)
  _contact_sheet(builder, os.path.join(data_dir, f"synthetic_views_{_CONFIG.value}_samples.png"),
                 _SAMPLES.value)


if __name__ == "__main__":
  app.run(main)
