"""kdpose: 3D-augmented contrastive knowledge distillation for object viewpoint estimation."""

__version__ = "0.1.0"
