"""Features of a frozen image encoder for every record of a split, extracted once and cached.

What the feature probe (``tools/feature_probe.py``) trains on, and what a stage's head warm-up
(``trainers.head_warmup``) trains the new layers on before fine-tuning: each record's exact box
crop through the encoder in inference mode, plus the mirrored crop's features on request. A
cache file holds one dataset, builder config, version, split, encoder, weights, size and grid;
it is written whole (``.partial``, then renamed) and re-extracted if it holds other records.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from kdpose import augment
from kdpose.data import pipeline
from kdpose.models import get_image_encoder, pretrained

# Extractor(images uint8 [B, S, S, 3], boxes [B, 4] pixels, flip) -> {"features": [B, C]} (+
# "flipped": [B, C], the mirrored crops' features, when flip).
Extractor = Callable[[np.ndarray, np.ndarray, bool], dict[str, np.ndarray]]


def make_extractor(encoder: str, weights: str, image_size: int, grid: int = 1) -> Extractor:
  """The frozen encoder ``encoder`` (``models.IMAGE_ENCODERS``) in inference mode, with the
  weights ``weights`` names (``pretrained.load_encoder``; "" = random init, seed 0), jitted.
  Features: ``[B, C]`` pooled, or with ``grid > 1`` the last map averaged over ``grid x grid``
  cells, ``[B, grid * grid * C]`` (the encoder's ``pool_grid``: azimuth needs the spatial layout
  that pooling drops)."""
  module = get_image_encoder(encoder)(pool_grid=grid)
  example = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  init = functools.partial(module.init, train=False)
  variables = (pretrained.load_encoder(encoder, weights, jax.eval_shape(init, jax.random.key(0),
                                                                        example))
               if weights else jax.jit(init)(jax.random.key(0), example))

  def features(variables, crops):
    return module.apply(variables, crops, train=False)

  @functools.partial(jax.jit, static_argnames="flip")
  def extract(variables, images, boxes, flip):
    crops = augment.crop_images(images, boxes, image_size)
    out = {"features": features(variables, crops)}
    if flip:
      out["flipped"] = features(variables, crops[:, :, ::-1])
    return out

  return lambda images, boxes, flip: jax.device_get(extract(variables, images, boxes, flip))


def cache_path(cache_dir: str, dataset: ml_collections.ConfigDict, version: str, split: str,
               options: ml_collections.ConfigDict, flip: bool, num_points: int = 0) -> str:
  """The cache file of ``split``'s features under ``options`` (encoder, weights, size), with
  the mirrored crops' when ``flip`` and ``num_points`` points per record when > 0."""
  weights = options.weights if options.weights in ("", "package") else os.path.splitext(
      os.path.basename(options.weights))[0]
  name = "-".join([dataset.name, dataset.config_name or "default", version, split,
                   options.encoder, weights or "random", f"{options.image_size}px"]
                  + ([f"grid{options.grid}"] if options.grid > 1 else []))
  name += ("-flip" if flip else "") + (f"-{num_points}pts" if num_points else "")
  return os.path.join(cache_dir, name + ".npz")


def split_features(data: pipeline.SplitData, path: str, extract: Extractor, *, flip: bool,
                   batch_size: int = 64, num_points: int = 0) -> dict[str, np.ndarray]:
  """Every record of ``data``: ``index [n]``, ``category [n]``, ``shape_id [n]``, ``viewpoint
  [n, 3]`` (degrees), ``symmetry [n]`` (int codes), ``features [n, C]`` (+ ``flipped [n, C]``
  when ``flip``; + ``points [n, num_points, 3]``, the first stored points, when ``num_points``),
  from ``path`` when it holds these records, else extracted and written there."""
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as saved:
      cached = {key: saved[key] for key in saved.files}
    if np.array_equal(cached["index"], data.indices) and (
        not num_points or cached.get("points", np.zeros((0, 0))).shape[1:2] == (num_points,)):
      return cached
    logging.warning("%s holds other records than the split: extracting again.", path)
  loader = pipeline.BatchLoader(data)
  parts = []
  try:
    for batch in pipeline.eval_batches(loader, global_batch_size=batch_size):
      out = extract(batch["image"], batch["box"], flip)
      parts.append({**out, "viewpoint": batch["viewpoint"], "symmetry": batch["symmetry"]})
      if num_points:
        parts[-1]["points"] = batch["points"][:, :num_points]
  finally:
    loader.close()
  n = len(data.indices)
  records = {key: np.concatenate([p[key] for p in parts])[:n] for key in parts[0]}
  records |= {"index": data.indices, "category": data.categories, "shape_id": data.shape_ids}
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".partial", "wb") as f:
    np.savez(f, **records)
  os.replace(path + ".partial", path)
  return records
