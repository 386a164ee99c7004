"""Browsing a runs directory: rows, filters, sorting, study membership, table/CSV/JSON output and
the DataFrame view, over runs created through the store's public API (nothing is trained)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import sys
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from prunelab.browse import FIXED_COLUMNS, columns, flatten_spec, run_rows, runs_frame, write_rows
from prunelab.errors import PrunelabError
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec
from prunelab.store import INDEX_NAME, RunStore
from prunelab.training.config import TrainConfig


class StageSpec(BaseModel):
    """A stand-in for a structured-pruning run spec: stage, method, options, no ``pruning`` block."""

    model_config = ConfigDict(frozen=True)
    stage: str
    method: str | None = None
    options: dict[str, int] = {}
    seed: int = 0

    def canonical(self) -> str:
        body = self.model_dump(mode="json", exclude_defaults=True)
        body["stage"] = self.stage
        return json.dumps({"v": "fake-structured-v1", **body}, sort_keys=True, separators=(",", ":"))

    def run_hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    def run_name(self) -> str:
        return f"structured-{self.method or 'plain'}-{self.stage}-{self.run_hash()}"


DENSE = RunSpec(data=DataSpec(name="synthetic"), train=TrainConfig(epochs=3))
SNIP = RunSpec(
    data=DataSpec(name="synthetic"),
    model=ModelSpec(name="mlp", options={"hidden": [32]}),
    pruning=PruningSpec(method="snip", density=0.1, checks=("shuffle_weights",)),
    train=TrainConfig(epochs=3),
)
SNIP_RUNNING = RunSpec(
    data=DataSpec(name="synthetic"),
    pruning=PruningSpec(method="snip", density=0.5),
    train=TrainConfig(epochs=3),
    seed=1,
)
STRUCTURED = StageSpec(stage="prune", method="l1norm", options={"width": 8})
LARGE = StageSpec(stage="large")
WEIGHTS = {"w": torch.zeros(2)}


def _finish(store: RunStore, spec: Any, acc: float, seconds: float | None, **extra: Any) -> None:
    store.begin(spec)
    for epoch in (1, 2):
        store.append_metrics(spec, {"epoch": epoch, "test_acc": acc})
    result = {"status": "done", "epochs": 2, "final_test_acc": acc, "best_test_acc": acc, **extra}
    if seconds is not None:
        result["seconds"] = seconds
    store.finish(spec, result, WEIGHTS)


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # A clock that ticks once per index write, so "updated" orders the runs by their last write.
    ticks = count(1000)
    monkeypatch.setattr("prunelab.store.time", SimpleNamespace(time=lambda: float(next(ticks))))
    store = RunStore(tmp_path / "runs")
    _finish(store, DENSE, 0.90, 10.0, density=1.0)
    _finish(store, SNIP, 0.80, 20.5, density=0.1)
    store.begin(SNIP_RUNNING)
    _finish(store, STRUCTURED, 0.70, None)  # a prune stage: no density, no seconds in its result
    _finish(store, LARGE, 0.95, 30.0, density=1.0)
    store.record_members("sanity", [DENSE, SNIP, SNIP_RUNNING])
    store.record_members("lottery", [SNIP])
    store.record_members("lottery", [SNIP])  # idempotent
    yield store.root


def _names(rows: list[dict[str, Any]]) -> list[str]:
    return [row["name"] for row in rows]


# -- rows ---------------------------------------------------------------------------------------------
def test_rows_carry_index_result_and_flattened_spec(runs_dir: Path) -> None:
    rows = {row["hash"]: row for row in run_rows(runs_dir)}
    assert len(rows) == 5
    snip = rows[SNIP.run_hash()]
    assert list(snip)[: len(FIXED_COLUMNS)] == list(FIXED_COLUMNS)
    assert snip["name"] == SNIP.run_name() and snip["status"] == "done"
    assert snip["epochs_done"] == 2 and snip["final_test_acc"] == 0.8 and snip["density"] == 0.1
    assert snip["seconds"] == 20.5
    assert snip["studies"] == "lottery,sanity"
    assert snip["spec_version"] == "prunelab-run-v1"
    assert snip["data.name"] == "synthetic"
    assert snip["model.options.hidden"] == [32]
    assert snip["pruning.method"] == "snip" and snip["pruning.density"] == 0.1
    assert snip["pruning.checks"] == ["shuffle_weights"]
    assert snip["train.epochs"] == 3
    assert "v" not in snip and "seed" not in snip  # seed 0 is the default: not in the canonical JSON

    running = rows[SNIP_RUNNING.run_hash()]
    # begun, never finished, and no live process holds it: interrupted (it resumes next time)
    assert running["status"] == "interrupted" and running["seconds"] is None and running["seed"] == 1
    assert running["density"] == 0.5  # from the spec until the run finishes

    structured = rows[STRUCTURED.run_hash()]
    assert structured["stage"] == "prune" and structured["method"] == "l1norm"
    assert structured["options.width"] == 8 and structured["seconds"] is None
    assert structured["density"] is None and structured["studies"] == ""
    assert structured["spec_version"] == "fake-structured-v1"


def test_flatten_spec_renames_version_and_guards_fixed_columns() -> None:
    flat = flatten_spec('{"v":"x-v2","density":0.3,"a":{"b":{"c":1},"d":[1,2]},"name":"n"}')
    assert flat == {"a.b.c": 1, "a.d": [1, 2], "spec.density": 0.3, "spec.name": "n", "spec_version": "x-v2"}
    assert list(flat) == sorted(flat)


# -- filters ------------------------------------------------------------------------------------------
def test_status_method_and_study_filters(runs_dir: Path) -> None:
    assert len(run_rows(runs_dir, status="done")) == 4
    assert _names(run_rows(runs_dir, status="interrupted")) == [SNIP_RUNNING.run_name()]
    with RunStore(runs_dir).claim(SNIP_RUNNING):  # a process holds it: running
        assert _names(run_rows(runs_dir, status="running")) == [SNIP_RUNNING.run_name()]
    assert set(_names(run_rows(runs_dir, method="snip"))) == {SNIP.run_name(), SNIP_RUNNING.run_name()}
    assert _names(run_rows(runs_dir, method="L1Norm")) == [STRUCTURED.run_name()]
    # dense: neither a pruning method nor a structured method (the plain large model included)
    assert set(_names(run_rows(runs_dir, method="dense"))) == {DENSE.run_name(), LARGE.run_name()}
    assert run_rows(runs_dir, method="grasp") == []
    assert set(_names(run_rows(runs_dir, study="sanity"))) == {
        DENSE.run_name(),
        SNIP.run_name(),
        SNIP_RUNNING.run_name(),
    }
    assert _names(run_rows(runs_dir, study="lottery")) == [SNIP.run_name()]
    assert _names(run_rows(runs_dir, study="sanity", method="snip", status="done")) == [SNIP.run_name()]


# -- sorting ------------------------------------------------------------------------------------------
def test_default_sort_is_most_recently_updated_first(runs_dir: Path) -> None:
    rows = run_rows(runs_dir)
    assert _names(rows) == [
        LARGE.run_name(),
        STRUCTURED.run_name(),
        SNIP_RUNNING.run_name(),
        SNIP.run_name(),
        DENSE.run_name(),
    ]
    assert _names(run_rows(runs_dir, descending=False)) == _names(rows)[::-1]


def test_sort_by_any_column_missing_values_last(runs_dir: Path) -> None:
    by_acc = run_rows(runs_dir, sort="final_test_acc")
    assert [row["final_test_acc"] for row in by_acc] == [0.95, 0.9, 0.8, 0.7, None]
    ascending = run_rows(runs_dir, sort="final_test_acc", descending=False)
    assert [row["final_test_acc"] for row in ascending] == [0.7, 0.8, 0.9, 0.95, None]
    by_density = run_rows(runs_dir, sort="pruning.density", descending=False)
    assert _names(by_density)[:2] == [SNIP.run_name(), SNIP_RUNNING.run_name()]
    assert [row.get("pruning.density") for row in by_density[2:]] == [None, None, None]
    by_seconds = run_rows(runs_dir, sort="seconds")
    assert [row["seconds"] for row in by_seconds] == [30.0, 20.5, 10.0, None, None]


# -- errors -------------------------------------------------------------------------------------------
def test_one_line_errors(runs_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PrunelabError) as bad_sort:
        run_rows(runs_dir, sort="accuracy")
    message = str(bad_sort.value)
    assert "\n" not in message and "'accuracy'" in message
    assert "final_test_acc" in message and "pruning.method" in message  # names the valid columns

    with pytest.raises(
        PrunelabError, match=r"^unknown status 'finished'; valid choices: done, failed, interrupted, running$"
    ):
        run_rows(runs_dir, status="finished")
    with pytest.raises(
        PrunelabError, match=r"^no run belongs to study 'rethinking'; recorded studies: lottery, sanity$"
    ):
        run_rows(runs_dir, study="rethinking")
    with pytest.raises(PrunelabError, match=r"^no runs in .*empty"):
        run_rows(tmp_path / "empty")
    with pytest.raises(PrunelabError, match=r"^unknown format 'xml'; valid choices: csv, json, table$"):
        write_rows([], "xml", io.StringIO())


# -- membership -----------------------------------------------------------------------------------------
def test_membership_queries(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    assert store.studies_of(SNIP) == ["lottery", "sanity"]
    assert store.studies_of(LARGE) == []
    assert store.memberships()[DENSE.run_hash()] == ["sanity"]


def test_record_members_is_one_transaction(tmp_path: Path) -> None:
    store = RunStore(tmp_path)

    def specs() -> Iterator[Any]:
        yield DENSE
        raise RuntimeError("spec generation failed")

    with pytest.raises(RuntimeError):
        store.record_members("sanity", specs())
    assert store.memberships() == {}
    with pytest.raises(PrunelabError):
        store.record_members("", [DENSE])


def test_index_created_before_memberships_still_works(tmp_path: Path) -> None:
    # An index written by an older prunelab: runs/links/executions only.
    root = tmp_path / "old"
    root.mkdir()
    with sqlite3.connect(root / INDEX_NAME) as db:
        db.executescript(
            """
            CREATE TABLE runs (hash TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
                spec TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
                epochs_done INTEGER NOT NULL DEFAULT 0, final_test_acc REAL, best_test_acc REAL, density REAL);
            CREATE TABLE links (child TEXT NOT NULL, parent TEXT NOT NULL, role TEXT NOT NULL,
                PRIMARY KEY (child, parent, role));
            CREATE TABLE executions (hash TEXT NOT NULL, started REAL NOT NULL, from_epoch INTEGER NOT NULL);
            """
        )
        db.execute(
            "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?)",
            (DENSE.run_hash(), DENSE.run_name(), "done", DENSE.canonical(), 1.0, 2.0, 3, 0.5, 0.6, 1.0),
        )
    db.close()
    rows = run_rows(root)
    assert _names(rows) == [DENSE.run_name()] and rows[0]["studies"] == ""
    assert rows[0]["seconds"] is None  # indexed as done, but its result.json is gone
    RunStore(root).record_members("sanity", [DENSE])
    assert run_rows(root, study="sanity")[0]["studies"] == "sanity"


# -- output -------------------------------------------------------------------------------------------
def test_table_output(runs_dir: Path) -> None:
    out = io.StringIO()
    write_rows(run_rows(runs_dir, sort="final_test_acc"), "table", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{'status':<11} {'epochs':>6} {'test acc':>8} {'density':>8}  name"
    assert lines[1] == f"{'done':<11} {2:>6} {'95.00':>8} {'1.0000':>8}  {LARGE.run_name()}"
    assert lines[3] == f"{'done':<11} {2:>6} {'80.00':>8} {'0.1000':>8}  {SNIP.run_name()}"
    assert lines[4] == f"{'done':<11} {2:>6} {'70.00':>8} {'-':>8}  {STRUCTURED.run_name()}"
    assert lines[5] == f"{'interrupted':<11} {0:>6} {'-':>8} {'0.5000':>8}  {SNIP_RUNNING.run_name()}"
    assert len(lines) == 6


def test_csv_output_has_every_column_in_a_stable_order(runs_dir: Path, tmp_path: Path) -> None:
    rows = run_rows(runs_dir, sort="final_test_acc")
    path = tmp_path / "runs.csv"
    write_rows(rows, "csv", path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        table = list(reader)
    spec_columns = header[len(FIXED_COLUMNS) :]
    assert header[: len(FIXED_COLUMNS)] == list(FIXED_COLUMNS)
    assert spec_columns == sorted(spec_columns)
    assert {"stage", "method", "options.width", "pruning.method", "pruning.checks", "seed"} <= set(
        spec_columns
    )
    assert header == columns(rows)
    snip = table[2]
    assert snip["name"] == SNIP.run_name()
    assert snip["pruning.checks"] == "shuffle_weights" and snip["model.options.hidden"] == "32"
    assert float(snip["final_test_acc"]) == 0.8 and snip["studies"] == "lottery,sanity"
    assert snip["stage"] == "" and table[4]["seconds"] == ""  # missing -> empty cell
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "runs.csv"]  # no temporary file left


def test_json_output_round_trips(runs_dir: Path, tmp_path: Path) -> None:
    rows = run_rows(runs_dir)
    path = tmp_path / "runs.json"
    path.write_text("old contents")
    write_rows(rows, "json", path)
    assert json.loads(path.read_text()) == rows
    stream = io.StringIO()
    write_rows(rows, "json", str(tmp_path / "again.json"))
    write_rows(rows, "json", stream)
    assert json.loads(stream.getvalue()) == rows == json.loads((tmp_path / "again.json").read_text())


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.json"
    path.write_text("old contents")

    class Unserialisable:
        def __str__(self) -> str:
            raise RuntimeError("cannot render")

    with pytest.raises(RuntimeError):
        write_rows([{"name": Unserialisable()}], "json", path)
    assert path.read_text() == "old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.json"]


def test_write_to_stdout(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rows(run_rows(runs_dir, status="interrupted"), "table", None)
    assert SNIP_RUNNING.run_name() in capsys.readouterr().out


# -- DataFrame ----------------------------------------------------------------------------------------
def test_runs_frame(runs_dir: Path) -> None:
    pytest.importorskip("pandas")
    frame = runs_frame(runs_dir, status="done", sort="final_test_acc")
    rows = run_rows(runs_dir, status="done", sort="final_test_acc")
    assert list(frame.columns) == columns(rows)
    assert list(frame["name"]) == _names(rows)
    assert list(frame["final_test_acc"]) == [0.95, 0.9, 0.8, 0.7]
    assert frame.loc[frame["stage"] == "prune", "options.width"].item() == 8


def test_runs_frame_without_pandas(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    with pytest.raises(PrunelabError, match=r"^runs_frame needs pandas: pip install 'prunelab\[frame\]'$"):
        runs_frame(runs_dir)
