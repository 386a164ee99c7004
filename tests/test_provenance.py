"""Provenance: what :func:`prunelab.provenance.provenance` records, that every finished run stores
it in result.json, and the report section summarising it over many runs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch

import prunelab
from prunelab import provenance as prov_module
from prunelab.provenance import PROVENANCE_KEYS, cpu_name, git_state, provenance
from prunelab.report.provenance import format_duration, provenance_html, provenance_markdown
from prunelab.spec import DataSpec, PruningSpec, RunSpec
from prunelab.store import RunStore
from prunelab.summaries.provenance import provenance_summary
from prunelab.training.config import TrainConfig

SPEC = RunSpec(
    data=DataSpec(name="synthetic"),
    pruning=PruningSpec(method="snip", density=0.2),
    train=TrainConfig(epochs=2),
)
WEIGHTS = {"w": torch.zeros(3)}


@pytest.fixture
def fresh_git_cache() -> Iterator[None]:
    # git_state is cached per process; a test that fakes git must neither see nor leave a cached answer.
    git_state.cache_clear()
    yield
    git_state.cache_clear()


# -- provenance() -------------------------------------------------------------------------------------
def test_provenance_record_on_cpu() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    record = provenance("cpu")
    assert tuple(record) == PROVENANCE_KEYS
    assert record["prunelab_version"] == prunelab.__version__
    assert record["torch_version"] == torch.__version__
    assert record["device"] == "cpu"
    assert record["device_name"] == cpu_name() == record["cpu"]
    assert record["num_threads"] == torch.get_num_threads()
    when = datetime.fromisoformat(record["datetime_utc"])
    assert when.utcoffset() == timedelta(0)
    assert before <= when <= datetime.now(timezone.utc)
    assert json.loads(json.dumps(record)) == record  # JSON-ready as is


def test_provenance_accepts_torch_devices_and_unknown_strings() -> None:
    assert provenance(torch.device("cpu"))["device"] == "cpu"
    unknown = provenance("no-such-device")
    assert unknown["device"] == "no-such-device" and unknown["device_name"] is None
    none = provenance(None)
    assert none["device"] is None and none["device_name"] is None
    cuda = provenance("cuda:0")
    assert cuda["device"] == "cuda:0"
    if torch.cuda.is_available():
        assert cuda["device_name"] == torch.cuda.get_device_name(0)
    else:
        assert cuda["device_name"] is None  # no CUDA here: recorded, never raised


def test_git_state_from_fake_git(monkeypatch: pytest.MonkeyPatch, fresh_git_cache: None) -> None:
    calls: list[tuple[str, ...]] = []
    answers = {"ls-files": "__init__.py\n", "rev-parse": "a" * 40 + "\n", "status": " M store.py\n"}

    def fake_git(package_dir: Path, *args: str) -> str | None:
        calls.append(args)
        return answers[args[0]]

    monkeypatch.setattr(prov_module, "_git", fake_git)
    assert git_state() == ("a" * 40, True)
    assert git_state() == ("a" * 40, True)
    assert len(calls) == 3  # cached: git runs once per process, not once per run
    assert provenance("cpu")["git_commit"] == "a" * 40

    git_state.cache_clear()
    answers["status"] = ""
    assert git_state() == ("a" * 40, False)

    git_state.cache_clear()
    answers["ls-files"] = None  # type: ignore[assignment]  # the package is not tracked here
    assert git_state() == (None, None)


@pytest.mark.parametrize(
    "error", [FileNotFoundError("git"), subprocess.TimeoutExpired(["git"], 5.0), PermissionError("git")]
)
def test_missing_or_hanging_git_never_fails(
    monkeypatch: pytest.MonkeyPatch, fresh_git_cache: None, error: Exception
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(prov_module.subprocess, "run", broken)
    record = provenance("cpu")
    assert record["git_commit"] is None and record["git_dirty"] is None


def test_git_outside_a_repository_is_none(tmp_path: Path) -> None:
    assert prov_module._git(tmp_path, "rev-parse", "HEAD") is None


# -- RunStore.finish records it ---------------------------------------------------------------------
def test_finish_records_provenance_in_result_json(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.begin(SPEC)
    result: dict[str, Any] = {"status": "done", "epochs": 2, "final_test_acc": 0.5, "device": "cpu"}
    store.finish(SPEC, result, WEIGHTS)
    stored = json.loads((store.run_dir(SPEC) / "result.json").read_text())
    assert set(stored["provenance"]) == set(PROVENANCE_KEYS)
    assert stored["provenance"]["device"] == "cpu"
    assert result == stored  # the caller's record gains the key too: returned == read back


def test_finish_keeps_given_provenance_and_leaves_read_only_results_alone(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.begin(SPEC)
    given = {"status": "done", "epochs": 1, "provenance": {"prunelab_version": "9.9"}}
    store.finish(SPEC, given, WEIGHTS)
    assert store.result(SPEC) == given

    other = SPEC.model_copy(update={"seed": 3})
    store.begin(other)
    frozen = MappingProxyType({"status": "done", "epochs": 1})
    store.finish(other, frozen, WEIGHTS)
    assert "provenance" not in frozen
    stored = store.result(other)
    assert stored is not None and stored["provenance"]["device"] is None  # no device in the result


# -- the report section -----------------------------------------------------------------------------
def _prov(**fields: Any) -> dict[str, Any]:
    base = {
        "prunelab_version": "0.1.0",
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "git_dirty": False,
        "torch_version": "2.4.0",
        "python_version": "3.11.7",
        "device": "cpu",
        "device_name": "Xeon",
        "num_threads": 4,
        "datetime_utc": "2025-01-02T10:00:00+00:00",
    }
    return {**base, **fields}


RESULTS: list[dict[str, Any] | None] = [
    {"status": "done", "seconds": 3600.0, "provenance": _prov()},
    {
        "status": "done",
        "seconds": 125.25,
        "provenance": _prov(
            git_dirty=True,
            torch_version="2.5.1",
            device="cuda:0",
            device_name="NVIDIA H200",
            num_threads=16,
            # 09:30 UTC: earlier than 10:00 UTC although its text sorts later
            datetime_utc="2025-01-02T11:30:00+02:00",
        ),
    },
    {"status": "done", "provenance": _prov(prunelab_version="0.2.0", git_commit=None)},  # no seconds
    {"status": "done", "seconds": 0.5},  # finished before provenance was recorded
    {"status": "running", "seconds": 999.0, "provenance": _prov(torch_version="1.0")},  # not finished
    {"status": "stopped", "seconds": 7.0},
    None,
]


def test_provenance_summary_over_hand_made_results() -> None:
    summary = provenance_summary(RESULTS)
    assert summary["runs"] == 4
    assert summary["with_provenance"] == 3
    assert summary["seconds"] == pytest.approx(3600.0 + 125.25 + 0.5)
    assert summary["prunelab"] == [
        "0.1.0 (git 0123456789ab)",
        "0.1.0 (git 0123456789ab, dirty)",
        "0.2.0",
    ]
    assert summary["torch"] == ["2.4.0", "2.5.1"]  # the unfinished run's 1.0 is not counted
    assert summary["python"] == ["3.11.7"]
    assert summary["devices"] == ["cpu (Xeon)", "cuda:0 (NVIDIA H200)"]
    assert summary["threads"] == [4, 16]
    assert summary["first"] == "2025-01-02T11:30:00+02:00"
    assert summary["last"] == "2025-01-02T10:00:00+00:00"


def test_compute_time_ignores_non_numbers() -> None:
    results = [
        {"status": "done", "seconds": "12"},
        {"status": "done", "seconds": float("nan")},
        {"status": "done", "seconds": True},
        {"status": "done", "seconds": 2},
        {"status": "done", "seconds": None},
    ]
    assert provenance_summary(results)["seconds"] == 2.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0 s"),
        (12.34, "12.3 s"),
        (59.97, "1 min 00 s"),
        (247.0, "4 min 07 s"),
        (3725.25, "1 h 02 min 05 s"),
        (90061.0, "25 h 01 min 01 s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_provenance_markdown_and_html() -> None:
    summary = provenance_summary(RESULTS)
    markdown = provenance_markdown(summary)
    assert markdown.startswith("## Provenance\n")
    assert "1 h 02 min 06 s" in markdown  # 3725.75 s
    assert "4 finished, 1 without provenance" in markdown
    assert "cuda:0 (NVIDIA H200)" in markdown and "2.4.0, 2.5.1" in markdown
    assert "2025-01-02T11:30:00+02:00 to 2025-01-02T10:00:00+00:00" in markdown

    page = provenance_html(summary)
    assert "<h2>Provenance</h2>" in page and "1 h 02 min 06 s" in page
    hostile = provenance_summary(
        [{"status": "done", "seconds": 1.0, "provenance": _prov(device_name="<script>x</script>")}]
    )
    escaped = provenance_html(hostile)
    assert "<script>" not in escaped and "&lt;script&gt;x&lt;/script&gt;" in escaped


def test_summary_of_no_finished_runs() -> None:
    summary = provenance_summary([None, {"status": "running", "seconds": 5.0}])
    assert summary["runs"] == 0 and summary["seconds"] == 0.0
    assert summary["first"] is None and summary["prunelab"] == []
    markdown = provenance_markdown(summary)
    assert "0 finished" in markdown and "0.0 s" in markdown and "prunelab" not in markdown
