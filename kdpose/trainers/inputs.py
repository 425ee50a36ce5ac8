"""The splits a stage trains and evaluates on, filtered as the config says."""

from __future__ import annotations

from ml_collections import ConfigDict

from kdpose.data import pipeline, registry


def load_data(config: ConfigDict) -> tuple[pipeline.SplitData, dict[str, pipeline.SplitData]]:
  """Builds the dataset if needed; returns the training split (novel categories dropped when
  ``dataset.exclude_novel``) and the evaluation splits by name."""
  dataset = config.dataset
  builder = registry.prepare(dataset)
  novel = list((builder.info.metadata or {}).get("novel_categories", []))
  train = pipeline.load_split(builder, dataset.train_split, dataset,
                              exclude_categories=novel if dataset.exclude_novel else (),
                              filters=dataset.train_filter)
  evals = {split: pipeline.load_split(builder, split, dataset, filters=dataset.eval_filter)
           for split in dataset.eval_splits}
  return train, evals
