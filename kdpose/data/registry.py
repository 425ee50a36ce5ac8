"""Datasets by name: which TFDS builder, and building it on first use."""

from __future__ import annotations

import importlib
import logging
import os

import tensorflow_datasets as tfds
from ml_collections import ConfigDict

# name -> (module, builder class). Imported lazily: each builder pulls its own dependencies.
_BUILDERS = {
    "synthetic_views": ("kdpose.data.synthetic_views", "SyntheticViews"),
    "objectnet3d": ("kdpose.data.objectnet3d", "ObjectNet3D"),
    "pascal3d": ("kdpose.data.pascal3d", "Pascal3D"),
    "pix3d": ("kdpose.data.pix3d", "Pix3D"),
}


def builder_class(name: str) -> type[tfds.core.DatasetBuilder]:
  """The builder class registered as ``name``; the error lists the known names."""
  if name not in _BUILDERS:
    raise KeyError(f"Unknown dataset {name!r}; known: {', '.join(sorted(_BUILDERS))}.")
  module, cls = _BUILDERS[name]
  return getattr(importlib.import_module(module), cls)


def get_builder(config: ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder for ``config`` (fields: name, config_name, data_dir), array_record format.

  ``data_dir`` must be a local path: the open-source ArrayRecord reader opens files with
  POSIX calls only (google/array_record#120), so a bucket's dataset is copied to each host's
  disk first (``gsutil -m cp -r gs://.../synthetic_views DATA_DIR/``)."""
  if "://" in config.data_dir:
    raise ValueError(
        f"dataset.data_dir={config.data_dir}: ArrayRecord files are read from local disks only "
        "(google/array_record#120); copy the dataset to each host's disk (gsutil -m cp -r) "
        "and pass that path.")
  kwargs = {"data_dir": os.path.abspath(config.data_dir), "file_format": "array_record"}
  if config.config_name:
    kwargs["config"] = config.config_name
  return builder_class(config.name)(**kwargs)


def prepare(config: ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns the builder, building the dataset first if it is not complete on disk.

  Real benchmarks read the user's manual download from ``config.manual_dir``. TFDS writes into
  an ``incomplete`` directory and renames it when done, so an interrupted build is redone.
  """
  builder = get_builder(config)
  if not builder.is_prepared():
    logging.info("Building dataset %s/%s into %s", config.name, config.config_name,
                 config.data_dir)
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(config.manual_dir) if config.manual_dir else None)
    builder.download_and_prepare(download_config=download_config)
  return builder
