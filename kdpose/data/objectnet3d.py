"""ObjectNet3D (Xiang et al., ECCV 2016) as a kdpose TFDS builder, read from the manual download.

Splits follow the zero-shot protocol of the anchors (StarMap, PoseFromShape, PoseContrast):
``train`` = ``Image_sets/train.txt`` (train on it, without the 20 novel classes) and ``val`` =
``Image_sets/val.txt`` (evaluate on it: the anchors' test set, filtered to untruncated, unoccluded
objects with keypoints). ``Image_sets/test.txt`` is not built: no anchor uses it, and it would
add a large share of the build time and disk. Every non-difficult object is stored with its
flags; the input pipeline filters.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from kdpose.data import cad_points, matlab_records

CATEGORIES = (
    "aeroplane", "ashtray", "backpack", "basket", "bed", "bench", "bicycle", "blackboard", "boat",
    "bookshelf", "bottle", "bucket", "bus", "cabinet", "calculator", "camera", "can", "cap", "car",
    "cellphone", "chair", "clock", "coffee_maker", "comb", "computer", "cup", "desk_lamp",
    "diningtable", "dishwasher", "door", "eraser", "eyeglasses", "fan", "faucet", "filing_cabinet",
    "fire_extinguisher", "fish_tank", "flashlight", "fork", "guitar", "hair_dryer", "hammer",
    "headphone", "helmet", "iron", "jar", "kettle", "key", "keyboard", "knife", "laptop", "lighter",
    "mailbox", "microphone", "microwave", "motorbike", "mouse", "paintbrush", "pan", "pen",
    "pencil", "piano", "pillow", "plate", "pot", "printer", "racket", "refrigerator",
    "remote_control", "rifle", "road_pole", "satellite_dish", "scissors", "screwdriver", "shoe",
    "shovel", "sign", "skate", "skateboard", "slipper", "sofa", "speaker", "spoon", "stapler",
    "stove", "suitcase", "teapot", "telephone", "toaster", "toilet", "toothbrush", "train",
    "trash_bin", "trophy", "tub", "tvmonitor", "vending_machine", "washing_machine", "watch",
    "wheelchair",
)
# Held out of training in the anchors' zero-shot protocol (StarMap, PoseFromShape).
NOVEL_CATEGORIES = (
    "bed", "bookshelf", "calculator", "cellphone", "computer", "door", "filing_cabinet", "guitar",
    "iron", "knife", "microwave", "pen", "pot", "rifle", "shoe", "slipper", "stove", "toilet",
    "tub", "wheelchair",
)
# Rotationally symmetric (azimuth ill-defined), as listed by PoseFromShape / PoseContrast.
CATEGORY_SYMMETRY = dict.fromkeys((
    "ashtray", "basket", "bottle", "bucket", "can", "cap", "cup", "fire_extinguisher",
    "fish_tank", "flashlight", "helmet", "jar", "paintbrush", "pen", "pencil", "plate", "pot",
    "road_pole", "screwdriver", "toothbrush", "trash_bin", "trophy",
), "continuous")
SPLITS = {"train": "train.txt", "val": "val.txt"}

_INSTRUCTIONS = """\
Download the four archives of ObjectNet3D from https://cvgl.stanford.edu/projects/objectnet3d/
(ftp://cs.stanford.edu/cs/cvgl/ObjectNet3D/ObjectNet3D_{images,annotations,cads,image_sets}.zip),
unzip them (each holds a top folder ObjectNet3D/) and pass that ObjectNet3D folder as manual_dir:
  <manual_dir>/Annotations/<image_id>.mat
  <manual_dir>/Images/<image_id>.JPEG
  <manual_dir>/Image_sets/{train,val,test,trainval}.txt
  <manual_dir>/CAD/off/<class>/NN.off
"""


class ObjectNet3D(matlab_records.MatRecordBuilder):
  """ObjectNet3D: 100 categories, 90,127 images, 201,888 objects, 791 CAD models.

  One example per non-difficult object: a crop with context around its box, its viewpoint in
  degrees, and points sampled on its CAD model. Splits: train and val from Image_sets; the
  anchors train on train without the 20 novel categories and evaluate on val.
  """

  name = "objectnet3d"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  CATEGORIES = CATEGORIES
  NOVEL_CATEGORIES = NOVEL_CATEGORIES
  CATEGORY_SYMMETRY = CATEGORY_SYMMETRY
  REQUIRED_PATHS = ("Annotations", "Images", "Image_sets/train.txt", "Image_sets/val.txt",
                    "CAD/off")
  HOMEPAGE = "https://cvgl.stanford.edu/projects/objectnet3d/"
  CITATION = """@inproceedings{xiang2016objectnet3d,
  title={ObjectNet3D: A Large Scale Database for 3D Object Recognition},
  author={Xiang, Yu and Kim, Wonhui and Chen, Wei and Ji, Jingwei and Choy, Christopher and
          Su, Hao and Mottaghi, Roozbeh and Guibas, Leonidas and Savarese, Silvio},
  booktitle={ECCV}, year={2016}}"""

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    cache = cad_points.PointCache(root, self.builder_config.num_points)
    return {split: self._generate_examples(root, split, list_file, cache)
            for split, list_file in SPLITS.items()}

  def _generate_examples(self, root: str, split: str, list_file: str,
                         cache: cad_points.PointCache):
    log = self._new_skip_log(split)
    for image_id in matlab_records.read_id_list(os.path.join(root, "Image_sets", list_file)):
      yield from self._record_examples(
          os.path.join(root, "Annotations", f"{image_id}.mat"), os.path.join(root, "Images"),
          id_prefix=image_id, wanted_class=None, fallback_image=f"{image_id}.JPEG",
          cad_path=lambda obj: os.path.join("CAD", "off", obj.category,
                                            f"{obj.cad_index:02d}.off"),
          cache=cache, log=log)
    log.finish()

