r"""The offline default: synthetic_views rendered from real meshes, sized for 2 CPU cores.

  python -m kdpose.main --config configs/default.py --workdir runs/default
  python -m kdpose.main --config configs/default.py:tiny --workdir /tmp/kdpose_tiny
  python -m kdpose.main --config configs/default.py:baseline --workdir runs/baseline \
      --config.stage=student --config.teacher_workdir=runs/default
  python -m kdpose.main --config configs/default.py:strong_teacher --workdir runs/strong_teacher
  python tools/ablation.py --config configs/default.py:fast --seeds 3 --workdir runs/ablation

The default: ImageNet EfficientNet-Lite0 under the teacher and the student at 128 px, their new
layers warmed up on its frozen features after a one-off 3-minute extraction (the student 1500
steps at batch 256, under a minute; the teacher, whose PointNet trains too, 600 at batch 128,
about 3 minutes), then 300 fine-tuning steps each (``common.apply_variants``' ``pretrained``);
the teacher's alignment term moves only its image side. ``strong_teacher`` warms the teacher
up 1500 steps at batch 256 (27 more minutes).
``tiny`` builds a tiny dataset from procedural meshes (no system packages) and trains a few
random-weight steps; ``baseline`` is the same student without distillation (every KD weight 0);
``fast`` feeds 64 px crops, for studies of many runs.
"""

from configs import common
from kdpose import models


def _shrink(config):
  config.dataset.config_name = "tiny"
  config.image_size = 32
  config.num_points = 64
  config.eval_batch_size = 32
  for stage, size in (("teacher", "tiny"), ("student", "tiny")):
    cfg = config[stage]
    cfg.model = (models.teacher_config if stage == "teacher" else models.student_config)(size)
    cfg.batch_size, cfg.num_steps = 16, 4
    cfg.log_every, cfg.checkpoint_every = 2, 2
    cfg.optimizer.warmup_steps = 0
    cfg.head_warmup.steps = 0


def get_config(arg=None):
  config = common.base_config("small")
  config.num_points = 256  # the teacher's points (of 2048 stored): 4x cheaper, enough for pose.
  for stage in ("teacher", "student"):
    config[stage].num_steps = 300
  # The default is the pretrained recipe; ``tiny`` replaces its models with small random ones.
  return common.apply_variants(config, ",".join(filter(None, ("pretrained", arg))), _shrink)
