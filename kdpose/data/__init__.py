"""The data layer: TFDS builders, what they share, and the host input pipeline.

Nothing here imports models, losses or steps; TensorFlow/TFDS stay inside this package.
"""

# Importing the package registers every builder, so `tfds.builder("synthetic_views")` works.
from kdpose.data import objectnet3d, pascal3d, pix3d, synthetic_views  # noqa: E402, F401
