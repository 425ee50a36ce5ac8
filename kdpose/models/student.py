"""The image-only student of stage 2 (and of test time).

  images -> image encoder -> MLP -> tanh -> feature [batch, embedding_dim] -> pose
  feature -> Dense projector -> embedding [batch, embedding_dim] (what contrastive KD distils)

The feature ends in tanh like the teacher's fused embedding, so feature KD compares like with
like; the linear projector keeps the pose feature free of the contrastive objective's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdpose import geometry
from kdpose.models.heads import MLP, Pose, PoseHeads


class Student(nn.Module):
  """Image-only student.

  Attributes:
    image_encoder: an unbound image encoder module, images ``[batch, H, W, 3]`` -> ``[batch, C]``.
    mlp_widths: hidden widths of the MLP after the encoder (anchor 800, 400).
    embedding_dim: width of the feature and of the projected embedding (anchor 200).
    bin_size: pose bin size in degrees.
    dtype: compute dtype of the dense layers (the encoder carries its own).
  """

  image_encoder: nn.Module
  mlp_widths: Sequence[int] = (800, 400)
  embedding_dim: int = 200
  bin_size: float = geometry.DEFAULT_BIN_SIZE
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray | None, *, train: bool,
               trunk: jnp.ndarray | None = None) -> dict[str, jnp.ndarray | Pose]:
    """Images ``[batch, H, W, 3]`` -> outputs (all float32). ``trunk``: the encoder's features
    ``[batch, C]``, given instead of images to run only the layers after it (head warm-up).

    Returns:
      {"embedding": projector output [batch, D], "feature": [batch, D],
       "pose": pose pytree from the feature}.
    """
    if trunk is None:
      trunk = self.image_encoder(images, train=train)
    feature = jnp.tanh(MLP(self.mlp_widths, self.embedding_dim, dtype=self.dtype,
                           name="mlp")(trunk, train=train)).astype(jnp.float32)
    embedding = nn.Dense(self.embedding_dim, dtype=self.dtype, name="projector")(feature)
    return {"embedding": embedding.astype(jnp.float32),
            "feature": feature,
            "pose": PoseHeads(self.bin_size, name="pose_heads")(feature)}
