"""Model zoo: importing this package registers every model in :data:`MODELS`.

Build one with ``build_model(name, input_shape, num_classes, seed=..., **options)``.
"""

from __future__ import annotations

from prunelab.models import cnn, densenet, imagenet, mlp, preresnet, resnet, vgg, wrn
from prunelab.models._common import INIT_SCHEMES
from prunelab.models.registry import MODELS, ModelEntry, build_model, model_family, register_model
from prunelab.models.wrn import wide_resnet

__all__ = [
    "INIT_SCHEMES",
    "MODELS",
    "ModelEntry",
    "build_model",
    "cnn",
    "densenet",
    "imagenet",
    "mlp",
    "model_family",
    "preresnet",
    "register_model",
    "resnet",
    "vgg",
    "wide_resnet",
    "wrn",
]
