r"""Pix3D as an evaluation set for a trained student (its dataset block replaces the run's).

  python -m kdpose.evaluate --workdir runs/objectnet3d --dataset_config configs/pix3d_eval.py \
      --dataset_config.dataset.manual_dir=/path/to/pix3d
"""

from configs import common


def get_config(arg=None):
  del arg
  config = common.base_config("resnet50")
  config.dataset.update(dict(
      name="pix3d", config_name="", manual_dir="data/manual/pix3d", pad_size=256,
      train_split="", eval_splits=("test",),
      eval_filter=dict(drop_difficult=False, drop_truncated=True, drop_occluded=True,
                       require_keypoints=False)))
  return config
