"""Honest, reproducible results: the same numbers however a study is executed, and never a silent
wrong one. Fault injection (kills, concurrent studies, corrupted files) in a form that runs on CPU in
seconds; each test failed on the code before this issue."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunelab.cli import main
from prunelab.errors import PrunelabError
from prunelab.pruning import Mask
from prunelab.runs import RunContext, execute
from prunelab.spec import DataSpec, ModelSpec, PruningSpec, RunSpec, parse_model
from prunelab.spec.studies import SanityStudy
from prunelab.store import RunStore
from prunelab.studies import rebuild_report, run_study
from prunelab.studies.sanity import study_runs
from prunelab.training.config import TrainConfig

CONV = ModelSpec(name="cnn1d", options={"channels": 4})
TRAIN = TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False)
STUDY = SanityStudy(
    name="trust",
    data=DataSpec(name="synthetic"),
    model=CONV,
    train=TRAIN,
    methods=("snip",),
    densities=(0.3,),
    seeds=(0, 1),
    checks=("shuffle_mask",),
    random_tickets=(),
    include_dense=True,
)


def _weights(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.parent.name: load_file(str(p)) for p in sorted(root.glob("*/model.safetensors"))}


def _same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k]) for k in a
    )


@pytest.mark.slow
def test_results_do_not_depend_on_workers_or_resume(tmp_path: Path) -> None:
    run_study(STUDY, tmp_path / "one", workers=1, progress=False)
    run_study(STUDY, tmp_path / "two", workers=2, progress=False)
    # resumed with one run left: finish all but the last run, then run the study inline
    specs = [r.spec for r in study_runs(STUDY)]
    store = RunStore(tmp_path / "resumed")
    for spec in specs[:-1]:
        execute(spec, store)
    run_study(STUDY, tmp_path / "resumed", workers=2, progress=False)
    one, two, resumed = (_weights(tmp_path / d) for d in ("one", "two", "resumed"))
    assert len(one) == len(specs) and _same(one, two) and _same(one, resumed)
    threads = {
        json.loads(p.read_text())["provenance"]["num_threads"]
        for p in (tmp_path / "two").glob("*/result.json")
    }
    assert threads == {1}  # fixed per run and recorded, whatever the worker count


CONCURRENT = textwrap.dedent(
    """
    import sys
    from prunelab.spec import DataSpec, ModelSpec
    from prunelab.spec.studies import SanityStudy
    from prunelab.studies import run_study
    from prunelab.training.config import TrainConfig
    study = SanityStudy(name="twice", data=DataSpec(name="synthetic"), model=ModelSpec(name="mlp"),
        train=TrainConfig(epochs=3, batch_size=64, lr=0.05, augment=False), methods=("magnitude",),
        densities=(0.3,), seeds=(0, 1), checks=(), random_tickets=("erk",), include_dense=True)
    if __name__ == "__main__":  # worker processes re-import this file
        run_study(study, sys.argv[1], workers=1, progress=False)
    """
)


@pytest.mark.slow
def test_two_identical_studies_at_once_train_each_run_once(tmp_path: Path) -> None:
    script = tmp_path / "study.py"
    script.write_text(CONCURRENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "runs")], env=env, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    store = RunStore(tmp_path / "runs")
    runs = store.list_runs()
    assert len(runs) == 2 * 3 and all(r["status"] == "done" for r in runs)
    for row in runs:
        run_dir = tmp_path / "runs" / row["name"]
        assert [
            json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ] == [1, 2, 3]
        with sqlite3.connect(tmp_path / "runs" / "index.sqlite") as db:
            assert (
                db.execute("SELECT count(*) FROM executions WHERE hash=?", (row["hash"],)).fetchone()[0] == 1
            )
    assert not list((tmp_path / "runs").rglob("*.tmp"))


def test_like_allocation_hashes_the_mask_content(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    Mask({"w": torch.tensor([True, False, True])}).save(path)
    first = PruningSpec(method="random", density=0.5, allocation=f"like:{path}")
    first_hash = RunSpec(pruning=first).run_hash()
    Mask({"w": torch.tensor([False, True, True])}).save(path)
    second = PruningSpec(method="random", density=0.5, allocation=f"like:{path}")
    assert first.like_sha256 != second.like_sha256
    assert first_hash != RunSpec(pruning=second).run_hash()
    with pytest.raises(ValueError, match="changed since"):  # a stored spec whose file changed
        PruningSpec.model_validate(first.model_dump())


def _dense(tmp_path: Path, epochs: int = 2) -> tuple[RunSpec, RunStore]:
    spec = RunSpec(
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp"),
        train=TRAIN.model_copy(update={"epochs": epochs}),
    )
    return spec, RunStore(tmp_path / "runs")


def test_the_index_is_repaired_from_the_run_directories(tmp_path: Path) -> None:
    spec, store = _dense(tmp_path)
    execute(spec, store)
    # a kill between result.json and the index update: the index still says running
    with sqlite3.connect(store.root / "index.sqlite") as db:
        db.execute("UPDATE runs SET status='running'")
    assert [r["status"] for r in RunStore(store.root).list_runs()] == ["done"]
    # a deleted index is rebuilt; a garbage one is set aside and rebuilt
    (store.root / "index.sqlite").unlink()
    assert [r["name"] for r in RunStore(store.root).list_runs()] == [spec.run_name()]
    (store.root / "index.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.warns(UserWarning, match="rebuilt"):
        rebuilt = RunStore(store.root)
    assert [r["status"] for r in rebuilt.list_runs()] == ["done"]


def test_listing_and_reports_never_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, store = _dense(tmp_path)
    execute(spec, store)
    (store.root / "index.sqlite").unlink()
    before = sorted(p.name for p in store.root.iterdir())
    assert main(["runs", "--runs-dir", str(store.root)]) == 0
    assert spec.run_name() in capsys.readouterr().out
    assert sorted(p.name for p in store.root.iterdir()) == before  # no index recreated


@pytest.mark.slow
def test_a_moved_runs_dir_still_reports_and_a_lost_one_never_overwrites(tmp_path: Path) -> None:
    small = STUDY.model_copy(update={"seeds": (0,), "checks": ()})
    _, html = run_study(small, tmp_path / "tree" / "runs", progress=False)
    text = (html.parent / "report.md").read_text()
    (tmp_path / "tree").rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "runs" / "reports" / "trust"
    (moved / "report.md").unlink()
    rebuild_report(moved)
    assert (moved / "report.md").read_text().split("## Provenance")[0] == text.split("## Provenance")[0]
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(PrunelabError, match="none of the .* runs"):
        rebuild_report(moved, tmp_path / "elsewhere")
    assert (moved / "report.md").is_file()


def test_garbage_result_and_checkpoint_are_recomputed(tmp_path: Path) -> None:
    spec, store = _dense(tmp_path)
    first = execute(spec, store)
    (store.run_dir(spec) / "result.json").write_text("{ garbage")
    again = execute(spec, store)  # not trusted, not a traceback: recomputed, bit-identical
    assert again["final_test_acc"] == first["final_test_acc"] and store.executions(spec) == [0, 0]
    # a checkpoint lacking keys: the run starts over instead of crashing
    other, _ = _dense(tmp_path, epochs=3)
    execute(other, store, RunContext(stop_after_epoch=1))
    torch.save({"epoch": 1}, store.run_dir(other) / "checkpoint.pt")
    assert execute(other, store)["epochs"] == 3


def test_damaged_metrics_on_resume_restart_the_run(tmp_path: Path) -> None:
    spec, store = _dense(tmp_path, epochs=4)
    execute(spec, store, RunContext(stop_after_epoch=3))
    lines = (store.run_dir(spec) / "metrics.jsonl").read_text().splitlines()
    (store.run_dir(spec) / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", lines[2]]) + "\n")
    with pytest.warns(UserWarning, match="metrics do not cover"):
        result = execute(spec, store)
    rows = (store.run_dir(spec) / "metrics.jsonl").read_text().splitlines()
    assert result["epochs"] == 4 and [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.slow
def test_finished_runs_are_verified_before_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ticket = RunSpec(
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="mlp"),
        train=TRAIN,
        pruning=PruningSpec(method="lr_rewinding", density=0.5),
    )
    store = RunStore(tmp_path / "runs")
    execute(ticket, store)
    trunk = next(
        s for s in (RunSpec(data=ticket.data, model=ticket.model, train=ticket.train),) if store.is_done(s)
    )
    weights = store.run_dir(trunk) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    assert main(["runs", "--runs-dir", str(store.root), "--verify"]) == 1
    assert "model.safetensors does not match" in capsys.readouterr().err
    other = ticket.model_copy(update={"pruning": PruningSpec(method="lr_rewinding", density=0.3)})
    with pytest.warns(UserWarning, match="failed verification"):
        execute(other, store)  # the trunk it needs is recomputed, not loaded truncated
    assert store.executions(trunk) == [0, 0] and store.verify(trunk) == []
    # a hand-edited accuracy is caught too
    result_path = store.run_dir(other) / "result.json"
    record = json.loads(result_path.read_text())
    record["final_test_acc"] = 0.999
    result_path.write_text(json.dumps(record))
    assert store.verify(other) == ["result.json was modified after the run finished"]


def test_a_directory_where_a_file_belongs_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, store = _dense(tmp_path)
    (store.run_dir(spec) / "result.json").mkdir(parents=True)
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--set",
            "train.augment=false",
            "--set",
            "train.schedule=multistep",
            "--runs-dir",
            str(store.root),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "is a directory" in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            [
                "tickets",
                "--dataset",
                "synthetic",
                "--epochs",
                "2",
                "--methods",
                "weight_rewinding",
                "--seeds",
                "1",
            ],
            "ticket.keep=2 with retrain 'continue' leaves 0 of 2",
        ),
        (["train", "--dataset", "synthetic", "--model", "cnn2d"], "takes images (C, H, W)"),
        (["train", "--dataset", "synthetic", "--set", "model.options.widht=3"], "bad option"),
        (
            [
                "rethinking",
                "--dataset",
                "synthetic",
                "--model",
                "cnn1d",
                "--set",
                "model.options.bn=false",
                "--methods",
                "slimming",
                "--seeds",
                "1",
            ],
            "needs BatchNorm",
        ),
    ],
)
def test_invalid_runs_are_refused_before_anything_is_created(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not list((tmp_path / "runs").glob("*/spec.json"))  # nothing created, nothing trained


def test_a_run_that_raises_is_marked_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, store = _dense(tmp_path)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("prunelab.runs.training.train_through_store", explode)
    with pytest.raises(RuntimeError):
        execute(spec, store)
    (row,) = store.list_runs()
    assert row["status"] == "failed"
    assert "disk on fire" in json.loads((store.run_dir(spec) / "error.json").read_text())["error"]


def test_yaml_errors_are_all_reported_with_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(PrunelabError) as caught:
        parse_model(RunSpec, {"data": {"name": "synthetic"}, "trian": {}, "seed": "x"}, "run")
    message = str(caught.value)
    assert "\n" not in message and "did you mean 'train'" in message and "seed:" in message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--density", "abc"], "Invalid value for '--density'"),
        (["train", "--dataset", "synthetic", "--device", "mps"], "device 'mps' is not available"),
        (
            [
                "prune",
                "--dataset",
                "synthetic",
                "--method",
                "random",
                "--density",
                "0.5",
                "--out",
                "/dev/null/x/mask.safetensors",
            ],
            "Not a directory",
        ),
    ],
)
def test_more_one_line_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, *(["--runs-dir", str(tmp_path)] if argv[0] == "train" else [])])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_non_utf8_spec_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(b"data: {name: \xff\xfe}\n")
    assert main(["run", str(spec), "--runs-dir", str(tmp_path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err


@pytest.mark.slow
def test_kills_at_random_points_resume_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """SIGKILL a training process at random moments (mid-epoch, mid-checkpoint, mid-finish), resume
    each time, and end with weights bit-identical to a run that was never interrupted."""
    import random
    import signal
    import time

    args = [
        "train",
        "--dataset",
        "synthetic",
        "--model",
        "cnn1d",
        "--epochs",
        "8",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--set",
        "train.augment=false",
        "--set",
        "model.options.channels=4",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [
        sys.executable,
        "-c",
        "import sys; from prunelab.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    rng = random.Random(0)
    killed = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [*command, *args, "--runs-dir", str(tmp_path / "killed")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(2.0, 4.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert main([*args, "--runs-dir", str(tmp_path / "killed")]) == 0
    assert main([*args, "--runs-dir", str(tmp_path / "clean")]) == 0
    assert killed >= 1 and _same(_weights(tmp_path / "killed"), _weights(tmp_path / "clean"))
    (name,) = [p.parent.name for p in (tmp_path / "killed").glob("*/result.json")]
    rows = (tmp_path / "killed" / name / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, 9))


@pytest.mark.slow
def test_a_killed_study_leaves_no_worker_running(tmp_path: Path) -> None:
    import signal
    import time

    script = tmp_path / "study.py"
    script.write_text(CONCURRENT.replace("epochs=3", "epochs=200").replace("workers=1", "workers=2"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    driver = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "runs")], env=env, stderr=subprocess.DEVNULL
    )
    workers: list[int] = []
    for _ in range(120):  # wait until both workers train (their start-up has run)
        time.sleep(0.5)
        children = Path(f"/proc/{driver.pid}/task/{driver.pid}/children")
        workers = [int(p) for p in children.read_text().split()] if children.exists() else []
        if len(list((tmp_path / "runs").glob("*/metrics.jsonl"))) >= 2:
            break
    assert len(workers) >= 2
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(3.0)
    alive = [
        pid
        for pid in workers
        if Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    ]
    assert alive == []


def test_a_stale_partial_dataset_cache_is_cleared(tmp_path: Path) -> None:
    """A kill mid-write of the MNIST-1D cache left a .part file forever; the next write clears it."""
    import time

    from prunelab.data import load_dataset
    from prunelab.data import mnist1d as mnist1d_module

    folder = tmp_path / "mnist1d"
    folder.mkdir()
    args = mnist1d_module.dataset_args(200, 42)
    path = mnist1d_module.cache_path(folder, args)
    stale = folder / f".{path.name}.abc123.part"
    stale.write_bytes(b"half a file")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    load_dataset("mnist1d", data_dir=tmp_path, num_samples=200)
    assert path.is_file() and not stale.exists()


def test_a_failed_plot_leaves_the_old_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from prunelab.report.sanity import write_sanity_report
    from prunelab.studies.sanity import summarize

    runs = study_runs(STUDY)
    results = {
        r.spec.run_hash(): {"status": "done", "final_test_acc": 0.5 + 0.01 * i, "per_layer": []}
        for i, r in enumerate(runs)
    }
    summary = summarize(STUDY, results)
    html = write_sanity_report(summary, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
    assert before and not list(tmp_path.glob(".*"))  # no temporary file left behind

    def broken(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
        Path(str(fname)).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError):
        write_sanity_report(summary, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.png")} == before and html.is_file()
    assert not list(tmp_path.glob(".*"))


def test_threads_reach_every_run_whatever_the_runner(tmp_path: Path) -> None:
    """``--threads`` is recorded in each run's provenance, inline and in a process pool alike."""
    from prunelab.runners import run_specs
    from prunelab.spec import RunSpec, parse_model

    specs = [
        parse_model(
            RunSpec,
            {
                "data": {"name": "mnist1d", "options": {"num_samples": 200}},
                "model": {"name": "mlp", "options": {"hidden": [8]}},
                "train": {"epochs": 1, "batch_size": 40},
                "seed": seed,
            },
        )
        for seed in (0, 1)
    ]
    for workers in (1, 2):
        results = run_specs(specs, tmp_path / f"w{workers}", workers=workers, threads=2, progress=False)
        assert [r["provenance"]["num_threads"] for r in results] == [2, 2]
