"""Config blocks every kdpose config shares. Each experiment file calls ``base_config``."""

from __future__ import annotations

import dataclasses

import ml_collections

from kdpose import augment, models, stages


def optimizer(learning_rate: float = 1e-3, weight_decay: float = 5e-4, schedule: str = "cosine",
              warmup_steps: int = 50) -> ml_collections.ConfigDict:
  """Adam with L2 weight decay (the anchors: lr 1e-4, wd 5e-4, step decay x0.1)."""
  return ml_collections.ConfigDict(dict(
      name="adam", learning_rate=learning_rate, weight_decay=weight_decay, schedule=schedule,
      warmup_steps=warmup_steps,
      decay_at=(0.67,),  # "step" schedule: fractions of training where the lr is multiplied ...
      decay_factor=0.1,  # ... by this.
      grad_clip_norm=0.0,  # 0 = no clipping.
      # A pretrained encoder (model.pretrained) learns at this times the learning rate.
      pretrained_lr_multiplier=1.0,
  ))


def _stage(model, batch_size: int, num_steps: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model=model, batch_size=batch_size, num_steps=num_steps, optimizer=optimizer(),
      log_every=50, eval_every=0,  # 0 = evaluate only at the end of the stage.
      checkpoint_every=200, max_to_keep=2,
      # Skip updates whose gradient is not finite (optax.apply_if_finite; counted in the metric
      # skipped_updates) instead of stopping at the first non-finite loss.
      skip_nonfinite=False,
      # Before the first step, the layers after a pretrained encoder train on its frozen
      # features for this many steps (trainers/head_warmup.py; 0 = no warm-up).
      head_warmup=dict(steps=0, batch_size=256, learning_rate=1e-3,
                       cache_dir="data/feature_cache"),
  ))


def base_config(model_size: str = "small") -> ml_collections.ConfigDict:
  """Everything but the dataset's specifics; ``model_size`` in tiny, small, resnet18, resnet50."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.stage = "all"  # "teacher", "student" or "all" (teacher, then student).
  # Stage 2 takes the frozen teacher from this run's workdir, or from this one when set.
  config.teacher_workdir = ""
  config.bin_size = 15.0  # degrees; 24/12/24 bins.
  config.image_size = 96  # network input side, pixels.
  config.num_points = 1024  # points per example fed to the teacher's shape encoder.
  config.eval_batch_size = 128
  config.flip_test = False  # evaluation: also predict on mirrored crops, keep the more confident.
  # A resumed run refuses a config that changes its result (run_config.record_config) unless
  # this is set; the change is then recorded in the workdir's config_changes.jsonl.
  config.allow_config_change = False

  config.dataset = ml_collections.ConfigDict(dict(
      name="synthetic_views",
      config_name="small",  # the TFDS builder config.
      data_dir="data/tfds",
      manual_dir="",  # real benchmarks: the user's raw download.
      pad_size=0,  # datasets of varying image size: their longest side (0 = fixed size).
      # The training input pipeline (grain): threads reading batches in each process, and
      # worker processes (0: the threads run in the trainer's process; > 0 needs absl flags
      # parsed, as under kdpose.main). Neither changes the batches, only how fast they come.
      loader_threads=4,
      loader_workers=0,
      train_split="train",
      eval_splits=("val", "test"),  # the first is also used for periodic evaluation.
      exclude_novel=True,  # zero-shot protocol: novel categories never seen in training.
      train_filter=dict(drop_difficult=True),
      # The headline (METHOD section 6): untruncated, unoccluded, non-difficult views. The final
      # evaluation also reports every view of the split beside it ("all_views").
      eval_filter=dict(drop_difficult=True, drop_truncated=True, drop_occluded=True,
                       require_keypoints=False),
  ))
  config.augment = ml_collections.ConfigDict(dataclasses.asdict(augment.AugmentConfig()))

  config.teacher = _stage(models.teacher_config(model_size), batch_size=64, num_steps=1000)
  config.teacher.align_weight = 0.5  # InfoNCE(image projector embedding, fused embedding).
  config.teacher.align_temperature = 0.1
  config.teacher.align_stop_gradient = False  # True: alignment moves only the image side.

  config.student = _stage(models.student_config(model_size), batch_size=64, num_steps=1000)
  config.student.pose_weight = 1.0
  config.student.ckd_weight = 1.0  # contrastive KD: the paper's core term.
  config.student.ckd_temperature = 0.1
  config.student.teacher_dropout = 0.3  # on the teacher embedding (anchor 0.3).
  config.student.symmetric = False
  config.student.pose_aware = False  # weigh negatives by geodesic distance / 180.
  config.student.ckd_projector = True  # CKD on the projected embedding (False: on the feature).
  config.student.logit_weight = 0.0  # KL(teacher heads || student heads).
  config.student.logit_temperature = 1.0
  config.student.feature_weight = 0.0  # KL over the 200-d features.
  config.student.feature_temperature = 1.0
  return config


def apply_variants(config: ml_collections.ConfigDict, arg: str | None,
                   shrink) -> ml_collections.ConfigDict:
  """``get_config("tiny,baseline")``: ``tiny`` calls ``shrink(config)``; ``baseline`` turns
  every KD weight to 0 (the same student trained without distillation); ``fast`` feeds 64 px
  crops and 256 points (about half the step time on CPU, for studies of many runs);
  ``pretrained`` puts an ImageNet EfficientNet-Lite0 (from its PyPI weight package) under both
  the teacher and the student, at 128 px: its heads warmed up on its frozen features, then its
  last stages fine-tuned at a tenth of the learning rate; ``strong_teacher`` (after
  ``pretrained``) warms the teacher's head up as long as the student's (27 more minutes on 2
  cores)."""
  for variant in filter(None, (arg or "").split(",")):
    if variant == "tiny":
      shrink(config)
    elif variant == "baseline":
      for name in stages.KD_TERMS:
        config.student[f"{name}_weight"] = 0.0
    elif variant == "fast":
      config.image_size, config.num_points = 64, 256
    elif variant == "pretrained":
      config.image_size = 128
      for stage in ("teacher", "student"):
        cfg = config[stage]
        cfg.model = (models.teacher_config if stage == "teacher" else models.student_config)(
            "lite0")
        # The 4x4 last map averaged over 2x2 cells; stem and stages 0-2 frozen (the costly
        # high-resolution part), every BatchNorm on the ImageNet statistics (the features the
        # head warm-up trained on; tools/results/recipe_search.md).
        cfg.model.update(dict(pretrained="package", pool_grid=2, frozen_stages=4,
                              frozen_norm=True))
        # The anchors fine-tune pretrained trunks at lr 1e-4; the new layers keep 1e-3.
        cfg.optimizer.pretrained_lr_multiplier = 0.1
        cfg.head_warmup.steps = 1500
      # The teacher's PointNet makes each warm-up step ~30x dearer than the student's (1.1 s at
      # batch 256 and 256 points on 2 cores): 600 steps at batch 128 (about 3 min) keep `make
      # run` within 45 minutes; ``strong_teacher`` is the 1500 x 256 warm-up (27 min, +2.1
      # mean Acc@30 for the teacher on test, tools/results/default_v3.md).
      config.teacher.head_warmup.update(dict(steps=600, batch_size=128))
      # The alignment term moves only the teacher's image side (tools/results/teacher_align_ab.md).
      config.teacher.align_stop_gradient = True
    elif variant == "strong_teacher":
      config.teacher.head_warmup.update(dict(steps=1500, batch_size=256))
    else:
      raise ValueError(f"Unknown config variant {variant!r}; known: tiny, baseline, fast, "
                       "pretrained, strong_teacher.")
  return config


def full_size(config: ml_collections.ConfigDict, *, train_records: int,
              model_size: str = "resnet50") -> ml_collections.ConfigDict:
  """The anchors' sizes and schedules for GPU/TPU runs: ResNet-50 at 224 px, Adam lr 1e-4 with
  weight decay 5e-4; teacher 300 epochs at batch 160 (lr x0.1 at epoch 200), student 60 epochs
  at batch 144 (the anchors' 46 x 3 augmented copies, rounded to a multiple of 8 devices).

  ``train_records``: training examples after filtering, to turn epochs into steps.
  """
  config.image_size = 224
  config.num_points = 2048  # all stored points (the anchors sample 2500 of 5000).
  config.eval_batch_size = 256
  for stage, epochs, batch_size in (("teacher", 300, 160), ("student", 60, 144)):
    cfg = config[stage]
    cfg.model = (models.teacher_config if stage == "teacher" else models.student_config)(
        model_size)
    cfg.batch_size = batch_size
    cfg.num_steps = max(1, epochs * train_records // batch_size)
    cfg.optimizer = optimizer(learning_rate=1e-4, schedule="step", warmup_steps=500)
    cfg.log_every, cfg.checkpoint_every, cfg.max_to_keep = 200, 2000, 3
    cfg.eval_every = cfg.num_steps // 10
  config.teacher.optimizer.decay_at = (200 / 300,)
  config.student.optimizer.decay_at = (40 / 60,)
  return config


def real_dataset(config: ml_collections.ConfigDict, name: str, manual_dir: str,
                 eval_split: str, *, exclude_novel: bool) -> None:
  """A benchmark read from the user's manual download: crops padded to 256 px, evaluated on
  ``eval_split`` with the base config's filter (the anchors' test filter)."""
  config.dataset.update(dict(
      name=name, config_name="", manual_dir=manual_dir, pad_size=256,
      exclude_novel=exclude_novel, eval_splits=(eval_split,)))
