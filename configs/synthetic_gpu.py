r"""synthetic_views ``large`` (224 px renders) with the anchors' ResNet-50 sizes, for a GPU/TPU.

  python -m kdpose.main --config configs/synthetic_gpu.py --workdir runs/synthetic_gpu
"""

from configs import common


def get_config(arg=None):
  config = common.base_config("resnet50")
  config.dataset.config_name = "large"
  # Epoch-based schedules are overkill on synthetic data: 100 teacher / 30 student epochs.
  common.full_size(config, train_records=40_000 // 3)
  return common.apply_variants(config, arg, _shrink)


def _shrink(config):
  raise ValueError("configs/synthetic_gpu.py has no tiny variant; use configs/default.py:tiny.")
