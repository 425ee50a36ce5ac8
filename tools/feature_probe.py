r"""What the data buys, measured cheaply: a pose head on frozen pretrained image features.

  python tools/feature_probe.py --config configs/default.py --compare_sources \
      "sweethome3d;sweethome3d,flightgear_ai,flightgear_models,flightgear_vehicles,crrcsim,torcs;\
all" \
      --out tools/results/feature_probe_sources.json --md tools/results/feature_probe_sources.md
  python tools/feature_probe.py --config configs/default.py:tiny \
      --config.dataset.data_dir=/tmp/tfds --compare_sources "primitives;all"

Every example's exact box crop (``augment.crop_images``, ``--image_size`` px) goes through a frozen
image encoder (default EfficientNet-Lite0 with its ImageNet weights, in inference mode); the
pooled features of every record of a split are cached in ``--cache_dir`` (one ``.npz`` per
dataset, builder config, version, split, encoder, weights and size; train also holds the features
of the mirrored crops). On them, a probe with the student's head (``MLP -> tanh -> PoseHeads``)
trains with the pose loss (up to each category's symmetry) on the train split's base categories
(zero-shot: novel categories never seen), optionally only on shapes of some mesh sources
(``shape_source``), and is scored on ``--eval_split``'s eval-filter records (the headline) and on
all of its views, with shape-bootstrap intervals. ``--compare_sources`` trains one probe per
source set on the same features and pairs each with the first on the same test records.
Writes ``--out`` (JSON: every report, interval, wall time and the command line) and ``--md``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from kdpose import geometry, intervals, losses, metrics, state
from kdpose.data import mesh_sources, pipeline, registry
from kdpose.models.heads import MLP, PoseHeads, decode_pose
from kdpose.trainers import evaluation
from kdpose.trainers.frozen_features import Extractor, cache_path, make_extractor, split_features

FLAGS = flags.FLAGS

# shape_source names: the Debian packages' mesh sources, 0 A.D., the tiny dataset's primitives
# and Sweet Home 3D, whose ids ("<archive stem>/<index>") carry no source name.
SWEETHOME3D = "sweethome3d"
_PREFIX_SOURCES = {**{name: name for name in mesh_sources.SOURCES}, "0ad": "0ad",
                   "primitive": "primitives"}
SOURCE_NAMES = (SWEETHOME3D, *sorted(set(_PREFIX_SOURCES.values())))
ALL_SOURCES = "all"


def default_options() -> ml_collections.ConfigDict:
  """Feature extraction, the probe's recipe and the comparison; the flags fill it."""
  return ml_collections.ConfigDict(dict(
      encoder="efficientnet_lite0",
      weights="package",  # pretrained.weight_file's source; "" = random weights.
      image_size=128,  # crop side, pixels.
      grid=1,  # the last feature map averaged over grid x grid cells (1: the pooled features).
      extract_batch_size=64,
      cache_dir="data/feature_cache",
      flip_train=True,  # train also on the mirrored crops (labels by geometry.flip_viewpoint).
      eval_split="test",
      source_sets=(ALL_SOURCES,),  # each: comma list of shape_source names, or "all".
      num_resamples=1000,  # shape-bootstrap resamples.
      probe=dict(hidden_widths=(512,), embedding_dim=128, dropout=0.0, learning_rate=1e-3,
                 weight_decay=1e-4, epochs=30, batch_size=256, seed=0),
  ))


def shape_source(shape_id: str) -> str:
  """The mesh source of a synthetic_views shape id, e.g. ``torcs/cars/...`` -> ``torcs``,
  ``primitive/car/0`` -> ``primitives``, ``Contributions/12`` -> ``sweethome3d``."""
  return _PREFIX_SOURCES.get(shape_id.split("/", 1)[0], SWEETHOME3D)


def source_set(name: str) -> tuple[str, ...] | None:
  """``"a,b"`` -> ``("a", "b")``; ``"all"`` -> None (no restriction)."""
  if name == ALL_SOURCES:
    return None
  sources = tuple(s.strip() for s in name.split(",") if s.strip())
  unknown = sorted(set(sources) - set(SOURCE_NAMES))
  if not sources or unknown:
    raise ValueError(f"Source set {name!r}: unknown sources {unknown}; known: {SOURCE_NAMES} "
                     f"(or {ALL_SOURCES!r}).")
  return sources


def subset(records: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
  """The rows of ``records`` whose record ``index`` is in ``indices`` (a filtered split's)."""
  keep = np.isin(records["index"], indices)
  if keep.sum() != len(indices):
    raise ValueError(f"{len(indices)} filtered records, {keep.sum()} of them in the features.")
  return {key: value[keep] for key, value in records.items()}


def training_set(records: dict[str, np.ndarray], novel_categories: Sequence[str],
                 sources: Sequence[str] | None, *, flip: bool) -> dict[str, np.ndarray]:
  """The base-category records of ``sources`` (None: all) -> ``features [m, C]``, ``viewpoint
  [m, 3]``, ``symmetry [m]``, ``category [m]``, ``shape_id [m]``; with ``flip`` the mirrored
  crops follow (labels ``geometry.flip_viewpoint``), so m is twice the records kept."""
  keep = ~np.isin(records["category"], list(novel_categories))
  if sources is not None:
    found = np.array([shape_source(s) for s in records["shape_id"]])
    keep &= np.isin(found, list(sources))
  if not keep.any():
    present = sorted(set(map(shape_source, records["shape_id"])))
    raise ValueError(f"No base-category training records from sources {sources}; the split's "
                     f"sources are {present}.")
  kept = {key: records[key][keep] for key in ("features", "viewpoint", "symmetry", "category",
                                                "shape_id")}
  if not flip:
    return kept
  mirrored = kept | {"features": records["flipped"][keep],
                     "viewpoint": geometry.flip_viewpoint(kept["viewpoint"])}
  return {key: np.concatenate([kept[key], mirrored[key]]) for key in kept}


class ProbeHead(nn.Module):
  """The student's head on frozen features: [dropout ->] ``MLP -> tanh -> PoseHeads``.

  ``[batch, C]`` features -> pose pytree (``kdpose.models.heads``).
  """

  hidden_widths: Sequence[int] = (512,)
  embedding_dim: int = 128
  dropout: float = 0.0
  bin_size: float = geometry.DEFAULT_BIN_SIZE

  @nn.compact
  def __call__(self, features: jnp.ndarray, *, train: bool):
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    x = jnp.tanh(MLP(self.hidden_widths, self.embedding_dim, name="mlp")(x, train=train))
    return PoseHeads(self.bin_size, name="pose_heads")(x)


def train_step(train_state: state.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               model: ProbeHead, tx: optax.GradientTransformation
               ) -> tuple[state.TrainState, jax.Array]:
  """One AdamW step of the pose loss (symmetry-aware) on ``batch``: ``features [B, C]``,
  ``viewpoint [B, 3]`` (degrees), ``symmetry [B]``. Returns the new state and the loss."""
  rng = jax.random.fold_in(rng, train_state.step)

  def loss_fn(params):
    pose, updates = model.apply({"params": params, "batch_stats": train_state.batch_stats},
                                batch["features"], train=True, mutable=["batch_stats"],
                                rngs={"dropout": rng})
    loss, _ = losses.pose_loss(pose, batch["viewpoint"], model.bin_size, batch["symmetry"])
    return loss, updates["batch_stats"]

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_state.params)
  updates, opt_state = tx.update(grads, train_state.opt_state, train_state.params)
  return train_state.replace(step=train_state.step + 1, batch_stats=batch_stats,
                             params=optax.apply_updates(train_state.params, updates),
                             opt_state=opt_state), loss


def fit_probe(train: dict[str, np.ndarray], probe: ml_collections.ConfigDict,
              bin_size: float = geometry.DEFAULT_BIN_SIZE) -> tuple[ProbeHead, dict, dict]:
  """Trains a ``ProbeHead`` on ``training_set`` arrays for ``probe.epochs`` epochs (AdamW,
  cosine decay to 0, batches drawn as ``pipeline.train_positions``). Returns the model, its
  variables and ``{"steps", "final_loss", "wall_s"}``."""
  start = time.perf_counter()
  n = len(train["features"])
  model = ProbeHead(tuple(probe.hidden_widths), probe.embedding_dim, probe.dropout, bin_size)
  num_steps = max(1, math.ceil(probe.epochs * n / probe.batch_size))
  tx = optax.adamw(optax.cosine_decay_schedule(probe.learning_rate, num_steps),
                   weight_decay=probe.weight_decay)
  train_state = state.init_train_state(jax.random.key(probe.seed), model, tx,
                                       (jnp.zeros((1, train["features"].shape[1])),))
  step = jax.jit(functools.partial(train_step, model=model, tx=tx), donate_argnums=0)
  rng = jax.random.key(probe.seed + 1)
  for index in range(num_steps):
    positions = pipeline.train_positions(index, probe.batch_size, n, probe.seed)
    batch = {key: train[key][positions] for key in ("features", "viewpoint", "symmetry")}
    train_state, loss = step(train_state, batch, rng)
  loss = float(loss)
  if not np.isfinite(loss):
    raise FloatingPointError(f"tools/feature_probe.py: probe loss {loss} after {num_steps} steps.")
  return model, train_state.variables(), {"steps": num_steps, "final_loss": loss,
                                          "wall_s": time.perf_counter() - start}


def predict(model: ProbeHead, variables: dict, features: np.ndarray, batch_size: int = 1024
            ) -> np.ndarray:
  """Decoded viewpoints ``[n, 3]`` (degrees) of ``features [n, C]``."""
  run = jax.jit(lambda v, x: decode_pose(model.apply(v, x, train=False), model.bin_size)[0])
  return np.concatenate([np.asarray(run(variables, features[i:i + batch_size]))
                         for i in range(0, len(features), batch_size)])


def score(pred: np.ndarray, records: dict[str, np.ndarray], data: pipeline.SplitData, *,
          num_resamples: int = 0) -> tuple[dict, np.ndarray]:
  """The ``metrics.viewpoint_report`` of predictions ``pred [n, 3]`` (degrees) of ``records``
  (errors up to symmetry), with ``base_azimuth_med_err`` (degrees, median over base-category
  records) and, when ``num_resamples``, ``intervals`` (``shape_bootstrap``); and the errors."""
  target, symmetry = records["viewpoint"].astype(np.float64), records["symmetry"]
  errors = geometry.symmetric_rotation_error(pred.astype(np.float64), target, symmetry)
  if num_resamples:
    report = evaluation.report_with_intervals(errors, records["category"], records["shape_id"],
                                              data, num_resamples)
  else:
    report = metrics.viewpoint_report(
        errors, records["category"], data.novel_categories,
        category_symmetry=metrics.symmetry_by_name(data.category_names, data.category_symmetry))
  base = ~np.isin(records["category"], data.novel_categories)
  azimuth = metrics.angle_errors(pred, target, symmetry)[base, 0]
  report["base_azimuth_med_err"] = (float(np.nanmedian(azimuth)) if np.isfinite(azimuth).any()
                                    else float("nan"))
  return report, errors


def load_features(dataset: ml_collections.ConfigDict, options: ml_collections.ConfigDict,
                  extract: Extractor) -> dict:
  """The (cached) features of the train and eval splits: ``{"train": base of the train
  filter's records, "eval": every record of the eval split, "headline": its eval-filter record
  indices, "eval_data": its SplitData, "extraction": per split {path, cached, wall_s}}``."""
  builder = registry.prepare(dataset)
  version = str(builder.info.version)
  loaded = {"extraction": {}}
  for key, split, flip in (("train", dataset.train_split, options.flip_train),
                           ("eval", options.eval_split, False)):
    data = pipeline.load_split(builder, split, dataset)
    path = cache_path(options.cache_dir, dataset, version, split, options, flip)
    start, cached = time.perf_counter(), os.path.exists(path)
    records = split_features(data, path, extract, flip=flip,
                             batch_size=options.extract_batch_size)
    loaded["extraction"][split] = {"path": path, "cached": cached, "records": len(data.indices),
                                   "wall_s": time.perf_counter() - start}
    loaded[key], loaded[f"{key}_data"] = records, data
  train_kept = pipeline.load_split(builder, dataset.train_split, dataset,
                                   filters=dataset.train_filter).indices
  loaded["train"] = subset(loaded["train"], train_kept)
  loaded["headline"] = pipeline.load_split(builder, options.eval_split, dataset,
                                           filters=dataset.eval_filter).indices
  return loaded


def probe_one(name: str, loaded: dict, options: ml_collections.ConfigDict) -> dict:
  """Trains the probe on the source set ``name`` and scores it: ``{"sources", "train_records",
  "train_shapes", "fit", "train" (report), "headline", "all_views" (reports with intervals),
  "headline_errors" [n] degrees}``."""
  eval_data = loaded["eval_data"]
  train = training_set(loaded["train"], eval_data.novel_categories, source_set(name),
                       flip=options.flip_train)
  model, variables, fit = fit_probe(train, options.probe)
  own = len(train["features"]) // (2 if options.flip_train else 1)  # unmirrored records
  own_records = {key: value[:own] for key, value in train.items()}
  train_report, _ = score(predict(model, variables, own_records["features"]), own_records,
                          loaded["train_data"])
  records = loaded["eval"]
  pred = predict(model, variables, records["features"])
  all_views, _ = score(pred, records, eval_data, num_resamples=options.num_resamples)
  keep = np.isin(records["index"], loaded["headline"])
  headline, errors = score(pred[keep], subset(records, loaded["headline"]), eval_data,
                           num_resamples=options.num_resamples)
  return {"sources": name, "train_records": own, "train_shapes": len(set(train["shape_id"])),
          "fit": fit, "train": train_report, "headline": headline, "all_views": all_views,
          "headline_errors": errors}


def probe_sources(dataset: ml_collections.ConfigDict, options: ml_collections.ConfigDict,
                  extract: Extractor | None = None) -> dict:
  """One probe per source set of ``options.source_sets`` on the same cached features (from
  ``extract``, default ``make_extractor`` of the options), each after the first paired with the
  first on the same headline records (``vs_first``: its ``paired_bootstrap``, A = it, B = the
  first). Returns ``{"setup", "extraction", "probes"}``, JSON-ready."""
  extract = extract or make_extractor(options.encoder, options.weights, options.image_size,
                                      options.grid)
  loaded = load_features(dataset, options, extract)
  probes = [probe_one(name, loaded, options) for name in options.source_sets]
  headline = subset(loaded["eval"], loaded["headline"])
  for probe in probes[1:]:
    probe["vs_first"] = intervals.paired_bootstrap(
        probe["headline_errors"], probes[0]["headline_errors"], headline["category"],
        headline["shape_id"], loaded["eval_data"].novel_categories,
        num_resamples=options.num_resamples)
  for probe in probes:
    del probe["headline_errors"]
  setup = {"dataset": dataset.to_dict(), "options": options.to_dict(),
           "novel_categories": loaded["eval_data"].novel_categories}
  return {"setup": setup, "extraction": loaded["extraction"], "probes": probes}


def _cell(numbers: dict, group: str, metric: str = "acc30", key: str = "") -> str:
  """``point [low, high]`` of ``numbers[group][metric]`` (``[key]`` when given), "–" if none."""
  if group not in numbers:
    return "–"
  interval = numbers[group][metric][key] if key else numbers[group][metric]
  return f"{interval['point']:.1f} [{interval['low']:.1f}, {interval['high']:.1f}]"


def _row(probe: dict) -> str:
  cis, paired = probe["headline"]["intervals"], probe.get("vs_first", {})
  cells = [probe["sources"], f"{probe['train_records']} ({probe['train_shapes']})",
           f"{probe['train']['mean']['acc30']:.1f}", _cell(cis, "mean"), _cell(cis, "base"),
           _cell(cis, "novel"), _cell(cis, "mean", "med_err"),
           _cell(probe["all_views"]["intervals"], "mean"),
           f"{probe['headline']['base_azimuth_med_err']:.1f}",
           _cell(paired, "base", key="diff"), _cell(paired, "novel", key="diff"),
           f"{probe['fit']['wall_s']:.0f}"]
  return "| " + " | ".join(cells) + " |"


def markdown_table(results: dict) -> str:
  """One row per source set: training records (shapes), train Acc@30, the headline numbers
  with 95% intervals, the all-views mean, base azimuth MedErr (degrees) and the paired
  differences to the first set."""
  header = ("| training sources | train records (shapes) | train Acc@30 | mean Acc@30 "
            "| base Acc@30 | novel Acc@30 | mean MedErr | all views mean Acc@30 "
            "| base azimuth MedErr | Δ base Acc@30 vs first | Δ novel Acc@30 vs first "
            "| fit s |\n|" + "---|" * 12)
  return header + "\n" + "\n".join(_row(probe) for probe in results["probes"])


# Flags named as the option they set, with its default: top-level options, then the probe's.
_OPTION_FLAGS = (
    ("", {"encoder": "Frozen image encoder (models.IMAGE_ENCODERS).",
          "weights": "Its weights: 'package', a checkpoint file, or '' (random).",
          "image_size": "Crop side, pixels.", "cache_dir": "Where the features are cached.",
          "grid": "Average the last feature map over grid x grid cells (1: pooled).",
          "flip_train": "Train also on the mirrored crops.", "eval_split": "Split to score.",
          "num_resamples": "Shape-bootstrap resamples."}),
    ("probe", {"epochs": "Probe training epochs.", "batch_size": "Probe training batch.",
               "learning_rate": "AdamW peak learning rate.", "weight_decay": "AdamW decay.",
               "embedding_dim": "Width of the probe's tanh feature.",
               "dropout": "Dropout on the frozen features.", "seed": "Probe seed."}),
)
_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           bool: flags.DEFINE_bool}


def _define_flags() -> None:
  """Flags of the command line only, so importing this module (tests) defines none."""
  defaults = default_options()
  config_flags.DEFINE_config_file("config", "configs/default.py",
                                  "A kdpose config; its `dataset` block is probed.")
  for block, helps in _OPTION_FLAGS:
    for name, help_text in helps.items():
      value = (defaults[block] if block else defaults)[name]
      _DEFINE[type(value)](name, value, help_text)
  flags.DEFINE_list("hidden_widths", list(map(str, defaults.probe.hidden_widths)),
                    "Hidden widths of the probe's MLP.")
  flags.DEFINE_string("train_sources", ALL_SOURCES, f"Comma list of {SOURCE_NAMES} or 'all'.")
  flags.DEFINE_string("compare_sources", "", "Semicolon list of source sets (overrides "
                      "--train_sources); each set after the first is paired with the first.")
  flags.DEFINE_string("out", "", "Write the results here (JSON).")
  flags.DEFINE_string("md", "", "Write the markdown table here.")


def _options_from_flags() -> ml_collections.ConfigDict:
  options = default_options()
  for block, helps in _OPTION_FLAGS:
    (options[block] if block else options).update({name: FLAGS[name].value for name in helps})
  options.probe.hidden_widths = tuple(int(w) for w in FLAGS.hidden_widths)
  options.source_sets = tuple((FLAGS.compare_sources or FLAGS.train_sources).split(";"))
  for name in options.source_sets:
    source_set(name)  # fail before extracting anything
  return options


def main(argv) -> None:
  del argv
  start = time.perf_counter()
  results = probe_sources(FLAGS.config.dataset, _options_from_flags())
  results["command"] = shlex.join(["python", *sys.argv])
  results["wall_s"] = time.perf_counter() - start
  for probe in results["probes"]:
    print(metrics.format_report(probe["headline"], f"\nprobe on {probe['sources']}: "
                                f"{FLAGS.eval_split}, headline"))
    print(intervals.format_intervals(probe["headline"]["intervals"], "headline"))
    print(intervals.format_intervals(probe["all_views"]["intervals"], "all views"))
    if "vs_first" in probe:
      print(intervals.format_paired(probe["vs_first"], f"A = {probe['sources']}, B = "
                                    f"{results['probes'][0]['sources']}"))
  table = markdown_table(results)
  print("\n" + table)
  if FLAGS.out:
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out, "w") as f:
      json.dump(results, f, indent=2)
  if FLAGS.md:
    with open(FLAGS.md, "w") as f:
      f.write(f"# Frozen-feature probe: {FLAGS.config.dataset.name}/"
              f"{FLAGS.config.dataset.config_name} {FLAGS.eval_split}\n\n{table}\n\n"
              f"`{results['command']}` ({results['wall_s']:.0f} s)\n")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
