"""Registries carry behaviour: a sanity check or a structured method defined and registered in this
file alone works through the public entry points (``prune``, ``prune_structured``,
``large_model_hooks``) like a built-in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import prunelab
from prunelab.data import load_dataset
from prunelab.pruning import CHECKS, Check, Mask, register_check
from prunelab.pruning.checks import corrupt_training_data
from prunelab.pruning.scores import Batch
from prunelab.pruning.structured import (
    STRUCTURED_METHODS,
    ChannelLayer,
    StructuredData,
    StructuredMethod,
    TrainingHooks,
    channel_method,
    keep_count,
    large_model_hooks,
    prune_structured,
    register_structured_method,
)

# -- toy checks -------------------------------------------------------------------------------------


def front_mask(mask: Mask, generator: torch.Generator) -> Mask:
    """Each layer's kept positions moved to the front (flattened): per-layer counts kept."""
    out = {}
    for name, tensor in mask.items():
        flat = torch.zeros(tensor.numel(), dtype=torch.bool, device=tensor.device)
        flat[: int(tensor.sum())] = True
        out[name] = flat.view(tensor.shape)
    return Mask(out)


WEIGHT_CALLS: list[tuple[int, bool]] = []


@torch.no_grad()
def constant_weights(model: nn.Module, mask: Mask, seed: int, generator: torch.Generator) -> None:
    """Every masked layer's weights set to 0.5 (the mask is applied afterwards by ``prune``)."""
    WEIGHT_CALLS.append((seed, isinstance(generator, torch.Generator)))
    params = dict(model.named_parameters())
    for name in mask:
        params[name].fill_(0.5)


def flip_labels(batches: list[Batch], num_classes: int, generator: torch.Generator) -> list[Batch]:
    """Label ``y`` -> ``num_classes - 1 - y``; inputs unchanged."""
    return [(x, num_classes - 1 - y) for x, y in batches]


@pytest.fixture
def toy_checks() -> Iterator[None]:
    WEIGHT_CALLS.clear()
    register_check(Check("front_mask", "kept positions moved to the front of each layer", mask=front_mask))
    register_check(Check("constant_weights", "every weight 0.5", weights=constant_weights))
    register_check(Check("flip_labels", "labels reversed", data=flip_labels))
    yield
    for name in ("front_mask", "constant_weights", "flip_labels"):
        CHECKS.remove(name)


@pytest.fixture(scope="module")
def data() -> prunelab.DataBundle:
    return load_dataset("synthetic", num_classes=4, input_shape=(1, 16))


def mlp() -> nn.Module:
    return prunelab.build_model("mlp", (1, 16), 4, seed=0, hidden=(32, 32))


def test_toy_checks_have_the_stage_of_their_transform(toy_checks: None) -> None:
    assert CHECKS.get("front_mask").stage == "mask"
    assert CHECKS.get("constant_weights").stage == "weights"
    assert CHECKS.get("flip_labels").stage == "data" and CHECKS.get("flip_labels").needs_data
    assert not CHECKS.get("front_mask").needs_data
    with pytest.raises(prunelab.PrunelabError, match="exactly one of"):
        Check("both", mask=front_mask, weights=constant_weights)
    with pytest.raises(prunelab.PrunelabError, match="exactly one of"):
        Check("neither")


def test_mask_check_moves_kept_positions_and_keeps_counts(toy_checks: None) -> None:
    plain = prunelab.prune(mlp(), "magnitude", 0.2)
    model = mlp()
    front = prunelab.prune(model, "magnitude", 0.2, check="front_mask")
    assert front.counts() == plain.counts()
    assert front != plain
    params = dict(model.named_parameters())
    for name, tensor in front.items():
        flat = tensor.flatten()
        k = plain.counts()[name]
        assert bool(flat[:k].all()) and not bool(flat[k:].any())
        assert bool((params[name].flatten()[k:] == 0).all())  # the moved mask is what gets applied


def test_weight_check_rewrites_kept_weights_after_the_builtins(toy_checks: None) -> None:
    model = mlp()
    # given first, but weight checks run in registry order: reinit first, then the toy check, so
    # reinit cannot undo it
    mask = prunelab.prune(model, "magnitude", 0.3, check=["constant_weights", "reinit"], seed=7)
    assert WEIGHT_CALLS == [(7, True)]
    params = dict(model.named_parameters())
    plain = prunelab.prune(mlp(), "magnitude", 0.3, seed=7)
    assert mask == plain and mask.counts() == plain.counts()
    for name, keep in mask.items():
        assert bool((params[name][keep] == 0.5).all())
        assert bool((params[name][~keep] == 0).all())


def test_data_check_corrupts_scoring_and_training_data(toy_checks: None, data: prunelab.DataBundle) -> None:
    flipped = corrupt_training_data(data, "flip_labels", torch.Generator().manual_seed(0))
    assert torch.equal(flipped.train_y, data.num_classes - 1 - data.train_y)
    assert torch.equal(flipped.test_y, data.test_y)
    assert flipped.info["training_corruption"] == "flip_labels"
    base = prunelab.prune(mlp(), "snip", 0.2, data=data)
    assert prunelab.prune(mlp(), "snip", 0.2, data=data, check="flip_labels") != base
    with pytest.raises(prunelab.PrunelabError, match="'flip_labels'.*'magnitude' uses none"):
        prunelab.prune(mlp(), "magnitude", 0.2, check="flip_labels")


def test_unknown_check_lists_the_valid_choices(toy_checks: None, data: prunelab.DataBundle) -> None:
    with pytest.raises(
        prunelab.PrunelabError, match=r"unknown check 'nope'; valid choices: .*front_mask.*invert"
    ):
        prunelab.prune(mlp(), "random", 0.2, check="nope")
    with pytest.raises(
        prunelab.PrunelabError,
        match=r"unknown corruption 'invert'; valid choices: flip_labels, random_labels, random_pixels$",
    ):
        corrupt_training_data(data, "invert", torch.Generator())


def test_builtin_checks_run_in_their_fixed_stage_order() -> None:
    assert [name for name in CHECKS if CHECKS.get(name).stage == "weights"] == [
        "reinit",
        "reinit_fan",
        "shuffle_weights",
    ]
    one, other = mlp(), mlp()
    prunelab.prune(one, "magnitude", 0.3, check="shuffle_weights,reinit", seed=1)
    prunelab.prune(other, "magnitude", 0.3, check="reinit,shuffle_weights", seed=1)
    for a, b in zip(one.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


# -- toy structured methods -------------------------------------------------------------------------


def first_filters(
    model: nn.Module, layers: list[ChannelLayer], options: dict[str, Any], data: StructuredData, seed: int
) -> dict[str, list[int]]:
    """Keep the first ``keep_count(C, ratio)`` filters of each prunable conv."""
    return {layer.conv: list(range(keep_count(layer.channels, float(options["ratio"])))) for layer in layers}


BACKWARD_CALLS: list[int] = []


def counting_hooks(model: nn.Module, options: dict[str, Any]) -> TrainingHooks:
    """An after_backward hook that counts its calls in ``BACKWARD_CALLS``."""
    BACKWARD_CALLS.clear()
    return TrainingHooks(after_backward=[lambda: BACKWARD_CALLS.append(1)])


@pytest.fixture
def toy_methods() -> Iterator[None]:
    register_structured_method(
        StructuredMethod(
            "first", "channel", False, {"ratio": 0.5}, "first filters", prune=channel_method(first_filters)
        )
    )
    register_structured_method(
        StructuredMethod(
            "first_counted",
            "channel",
            True,
            {"ratio": 0.25},
            prune=channel_method(first_filters),
            training_hooks=counting_hooks,
        )
    )
    yield
    STRUCTURED_METHODS.remove("first")
    STRUCTURED_METHODS.remove("first_counted")


def cnn() -> nn.Module:
    return prunelab.build_model("cnn1d", (1, 40), 10, seed=0, bn=True, channels=8)


def test_channel_method_from_a_keep_function(toy_methods: None) -> None:
    model = cnn()
    pruned = prune_structured(model, "first", options={"ratio": 0.75})
    assert pruned.kept == {
        "features.0": [0, 1, 2, 3, 4, 5],
        "features.3": [0, 1, 2, 3, 4, 5],
        "features.6": list(range(6)),
    }
    assert pruned.architecture["options"]["widths"] == [6, 6, 6]
    large, small = dict(model.named_parameters()), dict(pruned.model.named_parameters())
    assert large["features.0.weight"].shape[0] == 8  # the input model is untouched
    # the kept filters are the large model's first filters, BN and next layer sliced with them
    assert torch.equal(small["features.0.weight"], large["features.0.weight"][:6])
    assert torch.equal(small["features.1.weight"], large["features.1.weight"][:6])
    assert torch.equal(small["features.3.weight"], large["features.3.weight"][:6, :6])
    assert pruned.model(torch.randn(2, 1, 40)).shape == (2, 10)
    assert prune_structured(model, "first").kept["features.0"] == [0, 1, 2, 3]  # default ratio 0.5
    entry = STRUCTURED_METHODS.get("first")
    assert not entry.trains_large_model
    assert not large_model_hooks("first", model)
    with pytest.raises(prunelab.PrunelabError, match="unknown option 'rate'.*ratio"):
        prune_structured(model, "first", options={"rate": 0.5})


def test_method_with_training_hooks(toy_methods: None) -> None:
    assert STRUCTURED_METHODS.names()[-2:] == ["first", "first_counted"]
    assert {n for n in STRUCTURED_METHODS if STRUCTURED_METHODS.get(n).trains_large_model} == {
        "slimming",
        "sss",
        "sfp",
        "first_counted",
    }
    model = cnn()
    hooks = large_model_hooks("first_counted", model)
    assert hooks and len(hooks.after_backward) == 1
    for _ in range(3):
        model(torch.randn(4, 1, 40)).sum().backward()
        for hook in hooks.after_backward:
            hook()
    assert len(BACKWARD_CALLS) == 3
    with pytest.raises(prunelab.PrunelabError, match="'first_counted' selects channels on data: pass data"):
        prune_structured(model, "first_counted")
    pruned = prune_structured(model, "first_counted", data=(torch.randn(4, 1, 40), torch.zeros(4)))
    assert pruned.kept["features.3"] == [0, 1]  # keep_count(8, 0.25)


def test_builtin_structured_registry_is_unchanged() -> None:
    assert STRUCTURED_METHODS.names() == [
        "l1norm",
        "slimming",
        "thinet",
        "regression",
        "sfp",
        "sss",
        "weight_level",
    ]
    assert [n for n in STRUCTURED_METHODS if STRUCTURED_METHODS.get(n).trains_large_model] == [
        "slimming",
        "sfp",
        "sss",
    ]
    with pytest.raises(prunelab.PrunelabError, match="kind must be one of"):
        StructuredMethod("bad", "layer", False, prune=channel_method(first_filters))
