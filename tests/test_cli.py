"""The CLI: each command works, bad input exits 2 with a one-line error and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prunelab.cli import main
from prunelab.pruning import Mask


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_methods_lists_everything(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["methods"], capsys)
    assert code == 0
    for word in (
        "snip",
        "grasp",
        "synflow",
        "smart_ratio",
        "uniform_plus",
        "erk",
        "shuffle_weights",
        "resnet20",
        "mnist1d",
        "cifar10",
    ):
        assert word in out


def test_prune_writes_a_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "mask.safetensors"
    code, out, _ = run(
        [
            "prune",
            "--dataset",
            "synthetic",
            "--method",
            "snip",
            "--density",
            "0.25",
            "--check",
            "shuffle_mask",
            "--out",
            str(out_file),
        ],
        capsys,
    )
    assert code == 0 and "density 0.2500" in out
    assert abs(Mask.load(out_file).density() - 0.25) < 1e-3


def test_train_run_runs_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs_dir = tmp_path / "runs"
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--method",
        "random",
        "--density",
        "0.5",
        "--allocation",
        "erk",
        "--epochs",
        "2",
        "--runs-dir",
        str(runs_dir),
    ]
    code, out, _ = run(args, capsys)
    assert code == 0 and "final test accuracy" in out
    code, out, _ = run(args, capsys)
    assert code == 0 and "already finished" in out
    code, out, _ = run(["runs", "--runs-dir", str(runs_dir)], capsys)
    assert code == 0 and "done" in out and "1 runs" in out

    spec = tmp_path / "study.yaml"
    spec.write_text(
        "study: sanity\nname: yaml-study\ndata: {name: synthetic}\nmodel: {name: mlp, options: {hidden: [16]}}\n"
        "train: {epochs: 1, batch_size: 32, lr: 0.05}\nmethods: [magnitude]\ndensities: [0.5]\nseeds: [0, 1]\n"
        "checks: [invert]\nrandom_tickets: [uniform]\n"
    )
    code, out, _ = run(["run", str(spec), "--runs-dir", str(runs_dir)], capsys)
    assert code == 0 and "report:" in out
    report_html = runs_dir / "reports" / "yaml-study" / "report.html"
    report_html.unlink()
    code, out, _ = run(["report", str(runs_dir)], capsys)
    assert code == 0 and report_html.is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prune", "--method", "snipp", "--density", "0.1", "--out", "x"], "unknown method 'snipp'"),
        (["prune", "--method", "snip", "--density", "1.5", "--out", "x"], "density must be in (0, 1]"),
        (
            ["prune", "--dataset", "imagenet22k", "--method", "snip", "--density", "0.1", "--out", "x"],
            "unknown dataset 'imagenet22k'",
        ),
        (["train", "--dataset", "synthetic", "--method", "snip"], "--method and --density go together"),
        (["train", "--dataset", "synthetic", "--epochs", "-3"], "epochs"),
        (["sanity", "--dataset", "synthetic", "--checks", "bogus"], "unknown check 'bogus'"),
        (["sanity", "--dataset", "synthetic", "--densities", "0.1,x"], "comma-separated numbers"),
        (["run", "/nonexistent.yaml"], "does not exist"),
        (["report", "/nonexistent"], "does not exist"),
    ],
)
def test_bad_input_exit_2_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        argv + (["--runs-dir", str(tmp_path)] if argv[0] in ("train", "sanity") else []), capsys
    )
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_unknown_option_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prunelab.cli", "prune", "--densty", "0.1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
