"""Pascal3D+ 1.1 (Xiang et al., WACV 2014) as a kdpose TFDS builder, read from the manual download.

Splits are the anchors' (Render for CNN, StarMap, PoseFromShape, PoseContrast): ``train`` = every
ImageNet-sourced image + the PASCAL images not in VOC2012 val; ``test`` = the PASCAL images in
VOC2012 val (``PASCAL/VOCdevkit/VOC2012/ImageSets/Main/<class>_val.txt``). From a folder
``<class>_{imagenet,pascal}`` only objects of that class are taken, so an image annotated in two
class folders gives each object once. Every non-difficult object with a viewpoint is stored with
its flags; the input pipeline filters (anchors test on untruncated, unoccluded objects).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from kdpose.data import cad_points, matlab_records

CATEGORIES = ("aeroplane", "bicycle", "boat", "bottle", "bus", "car", "chair", "diningtable",
              "motorbike", "sofa", "train", "tvmonitor")
# Optional zero-shot split. The anchors' headline Pascal3D+ numbers train on all 12 classes:
# a training config holds these out only when it asks for the novel-category protocol.
NOVEL_CATEGORIES = ("bus", "motorbike")
CATEGORY_SYMMETRY = {"bottle": "continuous"}
_SOURCES = {"imagenet": ".JPEG", "pascal": ".jpg"}  # image source -> file extension.
_VOC_SETS = os.path.join("PASCAL", "VOCdevkit", "VOC2012", "ImageSets", "Main")

_INSTRUCTIONS = """\
Download PASCAL3D+_release1.1.zip from https://cvgl.stanford.edu/projects/pascal3d.html
(ftp://cs.stanford.edu/cs/cvgl/PASCAL3D+_release1.1.zip), unzip it and pass the folder
PASCAL3D+_release1.1 as manual_dir:
  <manual_dir>/Annotations/<class>_{imagenet,pascal}/<image_id>.mat
  <manual_dir>/Images/<class>_imagenet/<image_id>.JPEG, <class>_pascal/<image_id>.jpg
  <manual_dir>/CAD/<class>/NN.off
  <manual_dir>/PASCAL/VOCdevkit/VOC2012/ImageSets/Main/<class>_val.txt
"""


class Pascal3D(matlab_records.MatRecordBuilder):
  """Pascal3D+ 1.1: 12 rigid categories of PASCAL VOC 2012, plus ImageNet images.

  One example per non-difficult object: a crop with context around its box, its viewpoint in
  degrees, and points sampled on its CAD model. Splits: train (ImageNet + PASCAL not in VOC2012
  val) and test (PASCAL VOC2012 val).
  """

  name = "pascal3d"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
  CATEGORIES = CATEGORIES
  NOVEL_CATEGORIES = NOVEL_CATEGORIES
  CATEGORY_SYMMETRY = CATEGORY_SYMMETRY
  REQUIRED_PATHS = ("Annotations", "Images", "CAD", _VOC_SETS)
  HOMEPAGE = "https://cvgl.stanford.edu/projects/pascal3d.html"
  CITATION = """@inproceedings{xiang2014beyond,
  title={Beyond PASCAL: A Benchmark for 3D Object Detection in the Wild},
  author={Xiang, Yu and Mottaghi, Roozbeh and Savarese, Silvio},
  booktitle={WACV}, year={2014}}"""

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._manual_root(dl_manager)
    cache = cad_points.PointCache(root, self.builder_config.num_points)
    return {split: self._generate_examples(root, split, items, cache)
            for split, items in split_items(root).items()}

  def _generate_examples(self, root: str, split: str, items: list[tuple[str, str, str]],
                         cache: cad_points.PointCache):
    log = self._new_skip_log(split)
    for category, source, image_id in items:
      folder = f"{category}_{source}"
      yield from self._record_examples(
          os.path.join(root, "Annotations", folder, f"{image_id}.mat"),
          os.path.join(root, "Images", folder),
          id_prefix=f"{folder}/{image_id}", wanted_class=category,
          fallback_image=image_id + _SOURCES[source],
          cad_path=lambda obj: os.path.join("CAD", obj.category, f"{obj.cad_index:02d}.off"),
          cache=cache, log=log)
    log.finish()


def split_items(root: str) -> dict[str, list[tuple[str, str, str]]]:
  """(class, source, image_id) of every annotation file, by split (train / test)."""
  splits = {"train": [], "test": []}
  for category in CATEGORIES:
    voc_val = set(matlab_records.read_id_list(os.path.join(root, _VOC_SETS,
                                                           f"{category}_val.txt")))
    for source in _SOURCES:
      folder = os.path.join(root, "Annotations", f"{category}_{source}")
      if not os.path.isdir(folder):
        raise FileNotFoundError(f"Annotation folder {folder} is missing from the manual "
                                f"download:\n{_INSTRUCTIONS}")
      for name in sorted(os.listdir(folder)):
        image_id, ext = os.path.splitext(name)
        if ext == ".mat":
          split = "test" if source == "pascal" and image_id in voc_val else "train"
          splits[split].append((category, source, image_id))
  return splits
