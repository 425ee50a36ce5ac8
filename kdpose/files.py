"""A run's files on a local disk or in a bucket (``gs://...``), through etils.epath.

epath is the path layer orbax already writes checkpoints with; for ``gs://`` it goes through
TensorFlow's gfile where TensorFlow is installed (the training install) and fsspec/gcsfs
elsewhere. Every file of a workdir (config, reports, predictions, pictures) is written with
``write_atomically``: a reader, or a run killed half-way, never sees half a file; reads and
checks go through ``epath.Path`` directly.
"""

from __future__ import annotations

import os

from etils import epath


def is_url(location: str) -> bool:
  """Whether ``location`` names a bucket (``gs://``, ``s3://``...), not a local path."""
  return "://" in str(location)


def absolute(location: str) -> str:
  """A local path made absolute; a URL as it is (``os.path.abspath`` would turn
  ``gs://b/run`` into ``$PWD/gs:/b/run``)."""
  return str(location) if is_url(location) else os.path.abspath(location)


def write_atomically(location: str, data: str | bytes) -> None:
  """Writes ``data`` to ``location.partial``, then renames it over ``location`` (creating the
  parent directory). A bucket's rename is a copy and a delete: still never half a file."""
  path = epath.Path(location)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  if isinstance(data, str):
    partial.write_text(data)
  else:
    partial.write_bytes(data)
  partial.replace(path)

