r"""The offline default: synthetic_views rendered from real meshes, sized for 2 CPU cores.

  python -m kdpose.main --config configs/default.py --workdir runs/default
  python -m kdpose.main --config configs/default.py:tiny --workdir /tmp/kdpose_tiny
  python -m kdpose.main --config configs/default.py:baseline --workdir runs/baseline \
      --config.stage=student --config.teacher_workdir=runs/default
  python tools/ablation.py --config configs/default.py:fast --seeds 3 --workdir runs/ablation

``tiny`` builds a tiny dataset from procedural meshes (no system packages) and trains a few steps;
``baseline`` is the same student without distillation (every KD weight 0); ``fast`` feeds 64 px
crops and 256 points, about half the step time, for studies of many runs.
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


def get_config(arg=None):
  config = common.base_config("small")
  return common.apply_variants(config, arg, _shrink)
