"""Trained-weights tickets: IMP per-round densities, what each rewinding variant starts from (weights
and lr schedule), pruned weights never revive, trunks and IMP rounds are reused (counted through the
store), and a killed IMP chain resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunelab.pruning.mask import Mask
from prunelab.runners import run_specs
from prunelab.runs import execute_run, retrain_schedule
from prunelab.runs import waves as with_ancestors
from prunelab.runs.lineage import ancestors, parent_spec, rewind_epochs, trunk_spec
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec, TicketSpec
from prunelab.store import RunStore
from prunelab.training.config import TrainConfig

TRAIN = TrainConfig(epochs=4, batch_size=32, lr=0.05, schedule="multistep", augment=False)


def ticket(method: str, density: float, **fields: object) -> RunSpec:
    checks = fields.pop("checks", ())
    return RunSpec(
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp", options={"hidden": [32]}),
        pruning=PruningSpec(method=method, density=density, checks=checks, ticket=fields or None),
        train=TRAIN,
    )


def weights(store: RunStore, spec: RunSpec, epoch: int | None = None) -> dict[str, torch.Tensor]:
    return store.load_weights(spec, epoch)


# -- specs and lineage ------------------------------------------------------------------------------
def test_method_defaults_are_merged_with_given_ticket_fields() -> None:
    lr_rewind = PruningSpec(method="lr_rewinding", density=0.512, ticket={"rounds": 3})
    assert lr_rewind.ticket == TicketSpec(keep="end", retrain="restart", rounds=3)
    assert PruningSpec(method="lottery", density=0.5).ticket == TicketSpec(keep=0, retrain="restart")
    assert PruningSpec(method="weight_rewinding", density=0.5).ticket == TicketSpec(
        keep=2, retrain="continue"
    )
    assert PruningSpec(method="finetune", density=0.5).ticket == TicketSpec(keep="end", retrain="finetune")
    hybrid = PruningSpec(method="hybrid", density=0.5)
    assert hybrid.allocation == "smart_ratio" and hybrid.ticket == TicketSpec(keep="end")
    assert PruningSpec(method="snip", density=0.5).ticket is None


def test_bad_time_points_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="keep must be an epoch > 0"):
        PruningSpec(method="weight_rewinding", density=0.5, ticket={"keep": "end"})
    with pytest.raises(ValueError, match="score must be 'end'"):
        PruningSpec(method="lottery", density=0.5, ticket={"rounds": 2, "score": 3})


def test_imp_chain_densities_shrink_by_the_same_fraction_each_round() -> None:
    spec = ticket("lottery", 0.8**4, rounds=4)
    chain = ancestors(spec)
    assert chain[0].pruning is None  # the dense trunk
    densities = [c.pruning.density for c in chain[1:] if c.pruning is not None] + [spec.pruning.density]  # type: ignore[union-attr]
    assert densities == [0.8, 0.64, 0.512, 0.4096]
    # Round j of a 4-round chain *is* the j-round ticket: same spec, same run.
    assert chain[2].run_hash() == ticket("lottery", 0.64, rounds=2).run_hash()


def test_data_checks_corrupt_the_scored_training_and_other_checks_only_the_last_round() -> None:
    spec = ticket("lottery", 0.64, rounds=2, checks=("random_labels",))
    previous = parent_spec(spec)
    assert previous is not None and previous.training_corruption == "random_labels"
    trunk = trunk_spec(spec)
    assert trunk is not None and trunk.training_corruption == "random_labels" and trunk.pruning is None
    assert spec.training_corruption is None  # the final ticket trains on clean labels
    shuffled = ticket("lottery", 0.64, rounds=2, checks=("shuffle_mask",))
    plain = ticket("lottery", 0.64, rounds=2)
    assert parent_spec(shuffled) == parent_spec(plain)


def test_rewind_epochs_and_waves() -> None:
    rewind = ticket("weight_rewinding", 0.64, rounds=2, keep=3)
    assert rewind_epochs(rewind) == {3}
    assert rewind_epochs(ticket("lottery", 0.5)) == set()
    waves = with_ancestors([rewind, ticket("lottery", 0.8)])
    assert [len(w) for w in waves] == [1, 2, 1]  # one shared trunk; two round-1 tickets; round 2


def test_retrain_schedules() -> None:
    assert retrain_schedule(ticket("lottery", 0.5)) == (TRAIN, 0)
    assert retrain_schedule(ticket("weight_rewinding", 0.5, keep=1)) == (TRAIN, 1)
    config, start = retrain_schedule(ticket("finetune", 0.5, finetune_lr=0.002))
    assert start == 0 and config.schedule == "constant" and config.lr == 0.002 and config.epochs == 1
    assert TicketSpec(finetune_epochs=None).finetune_epochs_for(160) == 40


# -- execution ----------------------------------------------------------------------------------------
def test_rewinding_semantics_and_trunk_reuse(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    lottery = ticket("lottery", 0.3)
    rewind = ticket("weight_rewinding", 0.3, keep=1)
    lr_rewind = ticket("lr_rewinding", 0.3)
    finetune = ticket("finetune", 0.3)
    shuffled = ticket("lottery", 0.3, checks=("shuffle_mask",))
    run_specs([lottery, rewind, lr_rewind, finetune, shuffled], tmp_path, progress=False)
    trunk = trunk_spec(lottery)
    assert trunk is not None and all(trunk_spec(s) == trunk for s in (rewind, lr_rewind, finetune, shuffled))
    assert store.executions(trunk) == [0]  # trained once (with its epoch-1 checkpoint), reused 4 times
    assert store.rewind_path(trunk, 1).is_file()
    assert not store.rewind_path(trunk, 2).exists()  # only the epochs some ticket asked for

    # All magnitude tickets at the same density share one mask: the largest trained |w|.
    masks = {
        s.run_name(): Mask.load(store.run_dir(s) / "mask.safetensors") for s in (lottery, rewind, lr_rewind)
    }
    first = next(iter(masks.values()))
    assert all(all(torch.equal(m[n], first[n]) for n in first) for m in masks.values())
    trained = weights(store, trunk)
    for name, keep in first.items():
        kept = trained[name].abs()[keep]
        dropped = trained[name].abs()[~keep]
        if dropped.numel() and kept.numel():
            assert float(kept.min()) >= float(dropped.max()) - 1e-12  # global magnitude on trained weights

    # What each variant starts from, and its lr schedule.
    results = {s.run_name(): store.result(s) for s in (lottery, rewind, lr_rewind, finetune)}
    assert results[lottery.run_name()]["train"] == {
        "epochs": 4,
        "start_epoch": 0,
        "lr": 0.05,
        "schedule": "multistep",
    }
    assert results[rewind.run_name()]["train"]["start_epoch"] == 1  # epochs 1..3 at their scheduled lr
    assert [m["epoch"] for m in store.read_metrics(rewind)] == [2, 3, 4]
    assert results[finetune.run_name()]["train"] == {
        "epochs": 1,
        "start_epoch": 0,
        "lr": 0.001,
        "schedule": "constant",
    }
    assert results[lr_rewind.run_name()]["train"]["epochs"] == 4
    assert {row["role"] for row in store.links(lottery)} == {"trunk"}


def test_starting_weights_of_each_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Capture the weights each ticket's training starts from."""
    import prunelab.runs.training as run_module

    captured: dict[str, dict[str, torch.Tensor]] = {}
    real_train = run_module.train

    def spy(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        if kwargs.get("mask") is not None:
            captured[current] = {k: v.clone() for k, v in model.state_dict().items()}
        return real_train(model, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_module, "train", spy)
    store = RunStore(tmp_path)
    specs = {
        "lottery": ticket("lottery", 0.3),
        "rewind": ticket("weight_rewinding", 0.3, keep=2),
        "lr": ticket("lr_rewinding", 0.3),
        "reinit_fan": ticket("lottery", 0.3, checks=("reinit_fan",)),
    }
    for current, spec in specs.items():  # noqa: B007 - read by the spy
        execute_run(spec, store)
    trunk = trunk_spec(specs["lottery"])
    assert trunk is not None
    mask = Mask.load(store.run_dir(specs["lottery"]) / "mask.safetensors")
    from prunelab.models import build_model
    from prunelab.seeding import derive_seed

    init = build_model("mlp", (1, 16), 4, seed=derive_seed(0, "init"), hidden=[32]).state_dict()
    targets = {"lottery": init, "rewind": weights(store, trunk, 2), "lr": weights(store, trunk)}
    for label, target in targets.items():
        for name, value in captured[label].items():
            expected = target[name] * mask[name] if name in mask else target[name]
            assert torch.equal(value, expected), (label, name)
    for name in mask:  # re-initialised: new values, same positions
        assert not torch.equal(captured["reinit_fan"][name], captured["lottery"][name])
        assert torch.equal(captured["reinit_fan"][name] != 0, captured["lottery"][name] != 0)


def test_imp_pruned_weights_never_revive_and_rounds_are_reused(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    three = ticket("lottery", 0.8**3, rounds=3)
    execute_run(three, store)
    chain = ancestors(three)
    masks = [Mask.load(store.run_dir(s) / "mask.safetensors") for s in chain[1:]]
    masks.append(Mask.load(store.run_dir(three) / "mask.safetensors"))
    total = sum(int(t.numel()) for t in masks[0].values())
    assert [round(m.density() * total) for m in masks] == [round(0.8**j * total) for j in (1, 2, 3)]
    for earlier, later in zip(masks, masks[1:], strict=False):
        for name in earlier:
            assert not bool((later[name] & ~earlier[name]).any())  # nothing pruned comes back
    final = store.load_weights(three)
    for name, keep in masks[-1].items():
        assert bool((final[name][~keep] == 0).all())
    # Two more rounds on top reuse the three finished ones.
    execute_run(ticket("lottery", 0.8**5, rounds=5), store)
    for spec in chain + [three]:
        assert store.executions(spec) == [0]


def test_killed_imp_chain_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    spec = ticket("lr_rewinding", 0.8**2, rounds=2)
    whole = execute_run(spec, RunStore(tmp_path / "whole"))
    store = RunStore(tmp_path / "killed")
    round_one = parent_spec(spec)
    assert round_one is not None
    execute_run(round_one, store, stop_after_epoch=2)  # killed in the middle of round 1
    assert execute_run(spec, store, stop_after_epoch=1)["status"] == "stopped"  # and again in round 2
    resumed = execute_run(spec, store)
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    assert store.executions(round_one) == [0, 2]
    assert store.executions(spec) == [0, 1]


def test_trunk_finished_without_a_rewind_point_is_retrained_identically(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    execute_run(ticket("lottery", 0.5), store)
    trunk = trunk_spec(ticket("lottery", 0.5))
    assert trunk is not None
    before = weights(store, trunk)
    execute_run(ticket("weight_rewinding", 0.5, keep=1), store)
    assert store.executions(trunk) == [0, 0]
    after = weights(store, trunk)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_random_label_trunk_learns_nothing_about_the_test_set(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    spec = ticket("lottery", 0.5, checks=("random_labels",))
    execute_run(spec, store)
    trunk = trunk_spec(spec)
    assert trunk is not None and trunk.training_corruption == "random_labels"
    clean_trunk = trunk_spec(ticket("lottery", 0.5))
    assert clean_trunk is not None
    execute_run(clean_trunk, store)
    assert store.result(trunk)["final_test_acc"] < store.result(clean_trunk)["final_test_acc"]  # type: ignore[index]


def test_layerwise_imp_keeps_each_layer_at_the_round_density(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    spec = RunSpec(
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp", options={"hidden": [32]}),
        pruning=PruningSpec(method="lottery", density=0.64, allocation="uniform", ticket={"rounds": 2}),
        train=TRAIN,
    )
    execute_run(spec, store)
    for run, density in ((ancestors(spec)[1], 0.8), (spec, 0.64)):
        mask = Mask.load(store.run_dir(run) / "mask.safetensors")
        for row in mask.per_layer():
            assert row.kept == round(density * row.total)  # layer-wise, not global
