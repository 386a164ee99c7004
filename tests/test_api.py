"""The public prune() API: data forms, allocations, user methods, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import prunelab
from prunelab.data import load_dataset
from prunelab.pruning.methods import METHODS


@pytest.fixture(scope="module")
def data() -> prunelab.DataBundle:
    return load_dataset("synthetic", num_classes=4, input_shape=(1, 16))


def fresh() -> torch.nn.Module:
    return prunelab.build_model("mlp", (1, 16), 4, seed=0, hidden=(32, 32))


def test_tuple_batch_is_scored_exactly(data: prunelab.DataBundle) -> None:
    x, y = data.train_x[:8], data.train_y[:8]
    a = prunelab.prune(fresh(), "snip", 0.2, data=(x, y))
    b = prunelab.prune(fresh(), "snip", 0.2, data=(x, y), seed=5)  # the seed cannot change a fixed batch
    assert a == b


def test_dataloader_and_bundle_are_accepted(data: prunelab.DataBundle) -> None:
    loader = DataLoader(TensorDataset(data.train_x, data.train_y), batch_size=32)
    mask = prunelab.prune(fresh(), "grasp", 0.2, data=loader)
    assert mask.num_kept == round(0.2 * mask.num_total)
    mask = prunelab.prune(fresh(), "grasp", 0.2, data=data, options={"samples_per_class": 3})
    assert mask.num_kept == round(0.2 * mask.num_total)


def test_default_allocations_are_the_papers() -> None:
    assert METHODS.get("random").allocation == "uniform"
    for name in ("magnitude", "snip", "grasp", "synflow"):
        assert METHODS.get(name).allocation == "global"
    assert METHODS.get("synflow").rounds == 100


def test_allocation_like_another_mask(data: prunelab.DataBundle, tmp_path: Path) -> None:
    reference = prunelab.prune(fresh(), "snip", 0.2, data=data)
    path = reference.save(tmp_path / "ref.safetensors")
    for allocation in (reference, f"like:{path}"):
        random = prunelab.prune(fresh(), "random", 0.9, allocation=allocation)
        assert random.counts() == reference.counts()


def test_user_method_runs_like_a_builtin(data: prunelab.DataBundle) -> None:
    @prunelab.register_method("test_first_input", allocation="uniform", needs_data=True, overwrite=True)
    def first_input(ctx: prunelab.ScoreContext) -> dict[str, torch.Tensor]:
        return {name: w.detach().abs() + ctx.batches[0][0].abs().mean() for name, w in ctx.weights().items()}

    try:
        mask = prunelab.prune(fresh(), "test_first_input", 0.25, data=data, check="random_labels")
        assert abs(mask.density() - 0.25) < 0.01
        spec = prunelab.PruningSpec(method="test_first_input", density=0.25, checks=["shuffle_mask"])
        assert spec.allocation == "uniform"
    finally:
        METHODS.remove("test_first_input")


def test_prunable_set_options(data: prunelab.DataBundle) -> None:
    model = prunelab.build_model("cnn2d", (1, 8, 8), 10, seed=0)
    conv_only = prunelab.prune(model, "random", 0.5, prunable=prunelab.PrunableSet(scope="conv"))
    assert all("fc" not in n and "linear" not in n.lower() for n in conv_only) and len(conv_only) == 3
    first_dense = prunelab.prune(
        prunelab.build_model("cnn2d", (1, 8, 8), 10, seed=0),
        "random",
        0.5,
        prunable=prunelab.PrunableSet(first_layer_dense=True),
    )
    assert len(first_dense) == 3
    fixed = prunelab.prune(
        prunelab.build_model("cnn2d", (1, 8, 8), 10, seed=0),
        "random",
        0.5,
        prunable=prunelab.PrunableSet(last_layer_density=0.3),
    )
    last = fixed.per_layer()[-1]
    assert last.kept == round(0.3 * last.total)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "snp", "density": 0.1}, "unknown method 'snp'; valid choices: .*grasp, .*magnitude"),
        ({"method": "snip", "density": 0.0}, r"density must be in \(0, 1\]"),
        ({"method": "snip", "density": 1.2}, r"density must be in \(0, 1\]"),
        ({"method": "random", "density": 0.1, "allocation": "erk2"}, "unknown allocation 'erk2'"),
        ({"method": "snip", "density": 0.1, "data": None}, "method 'snip' scores on data"),
        ({"method": "snip", "density": 0.1, "options": {"iters": 3}}, "unknown option 'iters'"),
    ],
)
def test_bad_input_raises_one_line_value_error(
    data: prunelab.DataBundle, kwargs: dict[str, object], message: str
) -> None:
    kwargs = {"data": data, **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        prunelab.prune(fresh(), **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
