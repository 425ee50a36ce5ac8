"""The splits a stage trains and evaluates on, filtered as the config says."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import tensorflow_datasets as tfds
from ml_collections import ConfigDict
from orbax.checkpoint import multihost as ocp_multihost

from kdpose.data import pipeline, registry

# How long the other processes of a job wait for process 0 to build a dataset.
BUILD_TIMEOUT_S = 12 * 3600


def prepare(dataset: ConfigDict) -> tfds.core.DatasetBuilder:
  """``registry.prepare`` for every process of a job: process 0 builds a missing dataset while
  the others wait (concurrent builds of one directory would collide), then each opens it.

  The wait is the distributed runtime's barrier, with ``BUILD_TIMEOUT_S``: a device collective
  as barrier would give up after 30 s on CPU (gloo's limit for a process to join)."""
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      registry.prepare(dataset)
    ocp_multihost.sync_global_processes(f"kdpose: dataset {dataset.name} prepared",
                                        timeout=BUILD_TIMEOUT_S,
                                        processes=set(range(jax.process_count())))
  return registry.prepare(dataset)


def load_data(config: ConfigDict) -> tuple[pipeline.SplitData, dict[str, pipeline.SplitData]]:
  """Builds the dataset if needed; returns the training split (novel categories dropped when
  ``dataset.exclude_novel``) and the evaluation splits by name. Fails when ``config.num_points``
  asks for more points than the dataset stores."""
  dataset = config.dataset
  builder = prepare(dataset)
  novel = list((builder.info.metadata or {}).get("novel_categories", []))
  train = pipeline.load_split(builder, dataset.train_split, dataset,
                              exclude_categories=novel if dataset.exclude_novel else (),
                              filters=dataset.train_filter)
  if config.num_points > train.num_points:
    raise ValueError(
        f"config.num_points={config.num_points}, but dataset {dataset.name} "
        f"({builder.info.full_name}) stores {train.num_points} points per example: choose at "
        f"most {train.num_points}.")
  return train, eval_splits(builder, dataset, dataset.eval_splits)


def eval_splits(builder: tfds.core.DatasetBuilder, dataset: ConfigDict, splits: Sequence[str], *,
                all_views: bool = False) -> dict[str, pipeline.SplitData]:
  """Split name -> the split's records that pass ``dataset.eval_filter`` (the headline), or
  every record of it when ``all_views`` (the report beside the headline)."""
  filters = {} if all_views else dataset.eval_filter
  return {split: pipeline.load_split(builder, split, dataset, filters=filters) for split in splits}
