"""The data layer: TFDS builders, what they share, and the host input pipeline.

Nothing here imports models, losses or steps; TensorFlow/TFDS stay inside this package.
"""
