r"""ObjectNet3D zero-shot protocol: train on the 80 base categories, report base and novel.

  python -m kdpose.main --config configs/objectnet3d.py --workdir runs/objectnet3d \
      --config.dataset.manual_dir=/path/to/ObjectNet3D

The anchors start from pretrained ResNet-50 weights; give the user's file to both stages (a
torchvision checkpoint such as ``resnet50-19c8e357.pth`` or MoCo-v2's
``moco_v2_800ep_pretrain.pth.tar``; nothing is downloaded):
  --config.teacher.model.pretrained=/path/to/resnet50.pth \
  --config.student.model.pretrained=/path/to/resnet50.pth

Evaluation follows the anchors (StarMap, PoseFromShape): the ``val`` split, untruncated,
unoccluded objects with keypoint annotations.
"""

from configs import common

# Non-difficult objects of Image_sets/train.txt in the 80 base categories (approximate; the
# schedule only needs the order of magnitude).
_TRAIN_RECORDS = 60_000


def get_config(arg=None):
  config = common.base_config("resnet50")
  common.real_dataset(config, "objectnet3d", "data/manual/ObjectNet3D", "val",
                      exclude_novel=True)
  config.dataset.eval_filter.require_keypoints = True  # ObjectNet3D: the anchors' test filter.
  common.full_size(config, train_records=_TRAIN_RECORDS)
  return common.apply_variants(config, arg, _no_tiny)


def _no_tiny(config):
  raise ValueError("configs/objectnet3d.py has no tiny variant; tests use generated raw data.")
