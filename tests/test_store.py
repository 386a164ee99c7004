"""The run store: a finished run is never recomputed; a killed run resumes with no duplicated or
lost metrics and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
from pathlib import Path

from prunelab.runs import execute_run
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec
from prunelab.store import RunStore
from prunelab.training.config import TrainConfig

SPEC = RunSpec(
    data=DataSpec(name="synthetic"),
    model=ModelSpec(name="mlp", options={"hidden": [32]}),
    pruning=PruningSpec(method="snip", density=0.2, checks=("shuffle_weights",)),
    train=TrainConfig(epochs=5, batch_size=32, lr=0.05, schedule="cosine"),
)


def test_resume_after_kill_matches_uninterrupted(tmp_path: Path) -> None:
    whole = execute_run(SPEC, RunStore(tmp_path / "a"))
    store = RunStore(tmp_path / "b")
    assert execute_run(SPEC, store, stop_after_epoch=2)["status"] == "stopped"
    assert not store.is_done(SPEC)
    assert (store.run_dir(SPEC) / "checkpoint.pt").is_file()
    resumed = execute_run(SPEC, store)
    metrics = store.read_metrics(SPEC)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5]
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    first = [(m["train_loss"], m["test_acc"]) for m in RunStore(tmp_path / "a").read_metrics(SPEC)]
    assert first == [(m["train_loss"], m["test_acc"]) for m in metrics]
    assert not (store.run_dir(SPEC) / "checkpoint.pt").exists()


def test_metrics_written_after_checkpoint_are_not_duplicated(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    execute_run(SPEC, store, stop_after_epoch=3)
    # A kill between the metrics line and the checkpoint: the line of epoch 4 exists, the checkpoint says 3;
    # plus a torn half line.
    with open(store.run_dir(SPEC) / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"epoch": 4, "test_acc": 0.0}) + "\n" + '{"epoch": 5, "te')
    execute_run(SPEC, store)
    assert [m["epoch"] for m in store.read_metrics(SPEC)] == [1, 2, 3, 4, 5]


def test_finished_run_is_not_recomputed_unless_forced(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first = execute_run(SPEC, store)
    marker = store.run_dir(SPEC) / "result.json"
    stamp = marker.stat().st_mtime_ns
    again = execute_run(SPEC, store)
    assert again == first and marker.stat().st_mtime_ns == stamp
    forced = execute_run(SPEC, store, force=True)
    assert forced["final_test_acc"] == first["final_test_acc"]  # deterministic on CPU
    rows = store.list_runs()
    assert len(rows) == 1 and rows[0]["status"] == "done" and rows[0]["name"] == SPEC.run_name()


def test_run_directory_contents(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    result = execute_run(SPEC, store)
    run_dir = store.run_dir(SPEC)
    assert {p.name for p in run_dir.iterdir()} == {
        "spec.json",
        "mask.safetensors",
        "metrics.jsonl",
        "model.safetensors",
        "result.json",
    }
    assert json.loads((run_dir / "spec.json").read_text())["hash"] == SPEC.run_hash()
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored == result and stored["provenance"]["device"] == "cpu"  # what ran it, recorded
    assert abs(result["density"] - 0.2) < 0.01
    assert sum(row["kept"] for row in result["per_layer"]) == round(
        0.2 * sum(r["total"] for r in result["per_layer"])
    )
