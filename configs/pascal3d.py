r"""Pascal3D+ category-agnostic: train on ImageNet + PASCAL train images, test on VOC2012 val.

  python -m kdpose.main --config configs/pascal3d.py --workdir runs/pascal3d \
      --config.dataset.manual_dir=/path/to/PASCAL3D+_release1.1

The anchors start from pretrained ResNet-50 weights; give the user's file to both stages (a
torchvision checkpoint such as ``resnet50-19c8e357.pth`` or MoCo-v2's
``moco_v2_800ep_pretrain.pth.tar``; nothing is downloaded):
  --config.teacher.model.pretrained=/path/to/resnet50.pth \
  --config.student.model.pretrained=/path/to/resnet50.pth

The anchors' headline numbers train on all 12 classes (``exclude_novel=False``); the optional
zero-shot split (bus, motorbike novel) is ``--config.dataset.exclude_novel=True``.
"""

from configs import common

_TRAIN_RECORDS = 20_000  # non-difficult train objects of the 12 classes (approximate).


def get_config(arg=None):
  config = common.base_config("resnet50")
  common.real_dataset(config, "pascal3d", "data/manual/PASCAL3D+_release1.1", "test",
                      exclude_novel=False)
  common.full_size(config, train_records=_TRAIN_RECORDS)
  return common.apply_variants(config, arg, _no_tiny)


def _no_tiny(config):
  raise ValueError("configs/pascal3d.py has no tiny variant; tests use generated raw data.")
