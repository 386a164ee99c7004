"""``--backend ray``: a study run as Ray tasks on a real local Ray instance gives the inline runner's
results bit for bit (trunks before their tickets, through object references); a worker killed
mid-run is retried and resumes from its checkpoint with nothing lost or duplicated; an error of the
run itself is not retried; only the driver writes the index. Skipped when Ray is not installed."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from prunelab.cli import main
from prunelab.errors import PrunelabError
from prunelab.runners.ray_backend import JOURNAL_DIR
from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import SanityStudy
from prunelab.store import RunStore
from prunelab.studies import run_study
from prunelab.studies.sanity import study_runs
from prunelab.training.config import TrainConfig

ray = pytest.importorskip("ray")

# Three runs: a dense trunk and two tickets (one with a shuffled mask) that rewind to it, so the
# tickets' tasks must wait for the trunk's.
STUDY = SanityStudy(
    name="ray",
    data=DataSpec(name="synthetic"),
    model=ModelSpec(name="mlp", options={"hidden": [16]}),
    train=TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False),
    methods=("lr_rewinding",),
    densities=(0.5,),
    seeds=(0,),
    checks=("shuffle_mask",),
    random_tickets=(),
    include_dense=True,
)
TRUNK = next(r.spec for r in study_runs(STUDY) if r.spec.pruning is None)

# A plugin the Ray workers load: after the trunk's first checkpoint, its first attempt dies (as on a
# killed node) or raises; every checkpoint of the trunk is logged. The driver (the test) is untouched.
FAULT = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from prunelab.errors import PrunelabError
    from prunelab.store import RunStore

    DRIVER, TARGET, MODE, LOG = {driver}, {target!r}, {mode!r}, Path({log!r})
    _save = RunStore.save_checkpoint

    def save_checkpoint(self, spec, state):
        _save(self, spec, state)
        if os.getpid() == DRIVER or spec.run_hash() != TARGET:
            return
        first = not LOG.exists()
        with open(LOG, "a") as handle:  # one line per checkpoint: process, epoch
            handle.write(f"{{os.getpid()}} {{state.epoch}}\\n")
        if MODE == "raise":
            raise PrunelabError("injected failure")
        if first:
            os._exit(1)

    RunStore.save_checkpoint = save_checkpoint
    """
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    # A private local instance (never a cluster that $RAY_ADDRESS points at); workers inherit the
    # session's dataset cache from the environment.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inline") / "runs"
    run_study(STUDY, root, progress=False)
    return root


def _fault(tmp_path: Path, mode: str) -> tuple[str, Path]:
    log = tmp_path / f"{mode}.log"
    plugin = tmp_path / f"fault_{mode}.py"
    plugin.write_text(FAULT.format(driver=os.getpid(), target=TRUNK.run_hash(), mode=mode, log=str(log)))
    return str(plugin), log


def _weights(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.parent.name: load_file(str(p)) for p in sorted(root.glob("*/model.safetensors"))}


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(
        x[k].keys() == y[k].keys() and all(torch.equal(x[k][n], y[k][n]) for n in x[k]) for k in x
    )


def _index(root: Path) -> dict[str, Any]:
    """The index without its timestamps: runs, links and each run's execution start epochs."""
    with sqlite3.connect(root / "index.sqlite") as db:
        runs = sorted(
            db.execute(
                "SELECT hash, name, status, spec, epochs_done, final_test_acc, best_test_acc, density FROM runs"
            ).fetchall()
        )
        links = sorted(db.execute("SELECT child, parent, role FROM links").fetchall())
        executions: dict[str, list[int]] = {}
        for run_hash, epoch in db.execute("SELECT hash, from_epoch FROM executions ORDER BY started"):
            executions.setdefault(run_hash, []).append(epoch)
    return {"runs": runs, "links": links, "executions": executions}


def _epochs(root: Path) -> dict[str, list[int]]:
    return {
        p.parent.name: [json.loads(line)["epoch"] for line in p.read_text().splitlines()]
        for p in root.glob("*/metrics.jsonl")
    }


def _report(root: Path) -> str:
    return (root / "reports" / STUDY.name / "report.md").read_text().split("## Provenance")[0]


def _nothing_left(root: Path) -> bool:
    return not list((root / JOURNAL_DIR).glob("*")) and not list(root.rglob("*.tmp"))


def test_a_study_through_ray_matches_the_inline_runner(cluster: None, inline: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run_study(STUDY, root, progress=False, backend="ray")
    assert len(_weights(root)) == 3 and _same_weights(root, inline)  # same run hashes, same bits
    index = _index(root)
    assert index == _index(inline)
    assert {row[2] for row in index["runs"]} == {"done"} and len(index["links"]) == 2
    assert all(starts == [0] for starts in index["executions"].values())  # each trained once
    assert _report(root) == _report(inline) and _nothing_left(root)
    # finished: nothing is submitted again, nothing retrains
    run_study(STUDY, root, progress=False, backend="ray")
    assert _index(root) == index
    # a journal left by a driver that died (last line torn) is applied by the next driver, once
    sql = "INSERT INTO executions (hash, started, from_epoch) VALUES (?,?,?)"
    (root / JOURNAL_DIR / f"{TRUNK.run_hash()}.dead.jsonl").write_text(
        json.dumps({"time": 1.0, "statements": [[sql, [TRUNK.run_hash(), 1.0, 1]]]}) + '\n{"time": 2.0, "sta'
    )
    for _ in range(2):
        run_study(STUDY, root, progress=False, backend="ray")
        assert _index(root)["executions"][TRUNK.run_hash()] == [1, 0] and _nothing_left(root)


def test_a_killed_worker_is_retried_and_resumes(cluster: None, inline: Path, tmp_path: Path) -> None:
    plugin, log = _fault(tmp_path, "exit")
    root = tmp_path / "runs"
    run_study(STUDY, root, progress=False, backend="ray", plugins=[plugin])
    # the first attempt died after epoch 1; the retry, in another process, resumed at epoch 2
    (first, epoch_one), (second, epoch_two) = (line.split() for line in log.read_text().splitlines())
    assert first != second and (epoch_one, epoch_two) == ("1", "2")
    assert _same_weights(root, inline) and _report(root) == _report(inline)
    index = _index(root)
    # each run recorded once and finished; the trunk's dead attempt is counted, the retry resumed
    assert [row[2] for row in index["runs"]] == ["done"] * 3
    assert index["executions"][TRUNK.run_hash()] == [0, 1]
    assert sorted(index["executions"].values()) == [[0], [0], [0, 1]]
    assert set(map(tuple, _epochs(root).values())) == {(1, 2)}  # every epoch once, none lost
    assert _nothing_left(root)


def test_an_error_of_the_run_is_not_retried(cluster: None, tmp_path: Path) -> None:
    plugin, log = _fault(tmp_path, "raise")
    root = tmp_path / "runs"
    with pytest.raises(PrunelabError, match="^injected failure$"):
        run_study(STUDY, root, progress=False, backend="ray", plugins=[plugin])
    assert len(log.read_text().splitlines()) == 1  # one attempt
    (row,) = RunStore(root).list_runs()  # the tickets never started
    assert row["hash"] == TRUNK.run_hash() and row["status"] == "failed"
    assert "injected failure" in json.loads((root / row["name"] / "error.json").read_text())["error"]
    assert _nothing_left(root)


def test_the_cli_runs_studies_and_spec_files_on_ray(
    cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def local(*args: object, **kwargs: object) -> None:
        raise AssertionError("ran on the local backend")

    monkeypatch.setattr("prunelab.runners.run_waves", local)  # a study's runs, locally
    monkeypatch.setattr("prunelab.runs.execute", local)  # a single run, locally
    runs = str(tmp_path / "runs")
    argv = ["sanity", "--dataset", "synthetic", "--methods", "magnitude", "--densities", "0.5"]
    argv += ["--seeds", "1", "--checks", "", "--random-tickets", "", "--epochs", "1", "--runs-dir", runs]
    assert main([*argv, "--backend", "ray"]) == 0
    assert "report:" in capsys.readouterr().out
    spec = tmp_path / "run.yaml"
    spec.write_text("data: {name: synthetic}\ntrain: {epochs: 1, batch_size: 64}\n")
    assert main(["run", str(spec), "--runs-dir", runs, "--backend", "ray"]) == 0
    assert "final test accuracy" in capsys.readouterr().out
    assert all(row["status"] == "done" for row in RunStore(runs).list_runs())
    assert _nothing_left(tmp_path / "runs")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backend", "nonsense"], "unknown backend 'nonsense'; choose from local, ray"),
        (["--address", "auto"], "--address 'auto' needs --backend ray"),
    ],
)
def test_bad_backend_flags_are_one_line(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sanity", "--dataset", "synthetic", *flags, "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # refused before anything is created


def test_without_ray_installed_the_backend_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    code = main(
        ["sanity", "--dataset", "synthetic", "--backend", "ray", "--runs-dir", str(tmp_path / "runs")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'prunelab[ray]'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_bad_gpu_share_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prunelab.cli import main

    code = main(["sanity", "--preset", "demo", "--gpus-per-run", "1.5", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--gpus-per-run must be a fraction" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "index.sqlite").exists()
