"""Model zoo: importing this package registers every model in :data:`MODELS`.

Build one with ``build_model(name, input_shape, num_classes, seed=..., **options)``.
"""

from __future__ import annotations

from prunelab.models import cnn, mlp, resnet, vgg, wrn
from prunelab.models.registry import MODELS, ModelEntry, build_model, model_family, register_model
from prunelab.models.wrn import wide_resnet

__all__ = [
    "MODELS",
    "ModelEntry",
    "build_model",
    "cnn",
    "mlp",
    "model_family",
    "register_model",
    "resnet",
    "vgg",
    "wide_resnet",
    "wrn",
]
