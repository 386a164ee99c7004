"""Model registry: name -> constructor, with the model family that layer-wise ratio rules need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunelab.errors import PrunelabError
from prunelab.registry import Registry

#: A constructor takes the example shape (without batch) and the class count, plus options.
ModelConstructor = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    Attributes:
        constructor: ``constructor(input_shape, num_classes, **options) -> nn.Module``.
        family: ``"mlp"``, ``"cnn1d"``, ``"cnn2d"``, ``"vgg"``, ``"resnet"`` or ``"wrn"``; the smart-ratio
            rule of Su et al. uses its ResNet variant for ``resnet``/``wrn`` and its VGG variant otherwise.
        input_rank: 1 for sequences ``(C, L)`` or ``(L,)``, 2 for images ``(C, H, W)``, 0 for any.
        description: one line for ``prunelab models``.
    """

    constructor: ModelConstructor
    family: str
    input_rank: int
    description: str


MODELS: Registry[ModelEntry] = Registry("model")


def register_model(
    name: str, *, family: str, input_rank: int, description: str
) -> Callable[[ModelConstructor], ModelConstructor]:
    """Decorator registering ``constructor(input_shape, num_classes, **options)`` under ``name``."""

    def decorate(constructor: ModelConstructor) -> ModelConstructor:
        MODELS.add(name, ModelEntry(constructor, family, input_rank, description))
        return constructor

    return decorate


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Build registered model ``name`` for examples of ``input_shape`` and ``num_classes`` outputs.

    With ``seed`` the initialisation is deterministic (the global RNG is forked, not disturbed).
    The returned module carries ``prunelab_name`` and ``prunelab_family`` attributes.
    """
    entry = MODELS.get(name)
    rank = len(input_shape) - 1 if len(input_shape) > 1 else 1
    if entry.input_rank and entry.input_rank != rank:
        kind = {1: "sequences (C, L)", 2: "images (C, H, W)"}[entry.input_rank]
        raise PrunelabError(
            f"model {name!r} takes {kind}, but the data's examples have shape {tuple(input_shape)}"
        )
    try:
        if seed is None:
            model = entry.constructor(tuple(input_shape), int(num_classes), **options)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = entry.constructor(tuple(input_shape), int(num_classes), **options)
    except TypeError as exc:
        raise PrunelabError(f"model {name!r}: bad option ({exc})") from None
    # setattr: nn.Module's typed __setattr__ only admits tensors and modules.
    object.__setattr__(model, "prunelab_name", name.lower())
    object.__setattr__(model, "prunelab_family", entry.family)
    # What it takes to build a fresh twin (the re-initialisation sanity check needs one).
    object.__setattr__(
        model,
        "prunelab_build",
        {
            "name": name.lower(),
            "input_shape": tuple(input_shape),
            "num_classes": int(num_classes),
            "options": dict(options),
        },
    )
    return model


def fresh_twin(model: nn.Module, seed: int) -> nn.Module:
    """A newly initialised model of the same architecture, with initialisation seed ``seed``.

    Models from :func:`build_model` are rebuilt from the registry; any other module is deep-copied
    and every submodule with a ``reset_parameters`` method is reset under the seeded RNG.
    """
    import copy

    build = getattr(model, "prunelab_build", None)
    if isinstance(build, dict):
        twin = build_model(
            build["name"], build["input_shape"], build["num_classes"], seed=seed, **build["options"]
        )
    else:
        twin = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            for module in twin.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    return twin.to(next(model.parameters()).device)


def model_family(model: nn.Module) -> str:
    """The registry family of a model built by :func:`build_model`, or ``"unknown"``."""
    return str(getattr(model, "prunelab_family", "unknown"))
