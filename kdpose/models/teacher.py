"""The multi-modal teacher of stage 1: image + point cloud -> 3D-augmented embedding -> pose.

  images -> image encoder -> Dense + ReLU -> image feature [batch, image_feature_dim]
  points -> PointNet -> shape feature [batch, point_widths[-1]]
  concat -> fusion MLP -> tanh -> fused ("3D-augmented") embedding [batch, embedding_dim] -> pose
  image feature -> projector MLP -> tanh -> image embedding [batch, embedding_dim]

The projector lets stage 1 pull the teacher's image-only representation towards its fused one
(InfoNCE); both embeddings end in tanh so they live in the same bounded space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdpose import geometry
from kdpose.models.heads import MLP, Pose, PoseHeads
from kdpose.models.pointnet import PointNet


class Teacher(nn.Module):
  """Image + shape teacher.

  Attributes:
    image_encoder: an unbound image encoder module, images ``[batch, H, W, 3]`` -> ``[batch, C]``.
    image_feature_dim: width of the image feature (anchor 1024).
    point_widths: PointNet layer widths (anchor 64, 128, 1024).
    fusion_widths: hidden widths of the fusion MLP (anchor 800, 400).
    embedding_dim: width of both embeddings (anchor 200).
    projector_widths: hidden widths of the image-only projector (anchor 800, 400).
    bin_size: pose bin size in degrees.
    dtype: compute dtype of the dense layers and PointNet (the encoder carries its own).
  """

  image_encoder: nn.Module
  image_feature_dim: int = 1024
  point_widths: Sequence[int] = (64, 128, 1024)
  fusion_widths: Sequence[int] = (800, 400)
  embedding_dim: int = 200
  projector_widths: Sequence[int] = (800, 400)
  bin_size: float = geometry.DEFAULT_BIN_SIZE
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray | None, points: jnp.ndarray, *, train: bool,
               trunk: jnp.ndarray | None = None) -> dict[str, jnp.ndarray | Pose]:
    """Images ``[batch, H, W, 3]``, points ``[batch, N, 3]`` -> outputs (all float32).
    ``trunk``: the image encoder's features ``[batch, C]``, given instead of images to run only
    the layers after it (head warm-up).

    Returns:
      {"embedding": fused embedding [batch, D], "image_embedding": projected image feature
       [batch, D], "pose": pose pytree from the fused embedding}.
    """
    if trunk is None:
      trunk = self.image_encoder(images, train=train)
    if trunk.shape[0] != points.shape[0]:
      raise ValueError(f"kdpose/models/teacher.py: {trunk.shape[0]} images but "
                       f"{points.shape[0]} point clouds.")
    image_feature = nn.relu(
        nn.Dense(self.image_feature_dim, dtype=self.dtype, name="image_feature")(trunk))
    shape_feature = PointNet(self.point_widths, dtype=self.dtype, name="point_encoder")(
        points, train=train)
    fused = jnp.concatenate([image_feature, jnp.asarray(shape_feature, self.dtype)], axis=-1)
    embedding = jnp.tanh(MLP(self.fusion_widths, self.embedding_dim, dtype=self.dtype,
                             name="fusion")(fused, train=train)).astype(jnp.float32)
    image_embedding = jnp.tanh(MLP(self.projector_widths, self.embedding_dim, dtype=self.dtype,
                                   name="projector")(image_feature, train=train))
    return {"embedding": embedding,
            "image_embedding": image_embedding.astype(jnp.float32),
            "pose": PoseHeads(self.bin_size, name="pose_heads")(embedding)}
