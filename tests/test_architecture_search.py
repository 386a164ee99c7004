"""Pruning as architecture search (Liu et al. 2019, section 5): uniform architectures matched in
parameters, guided per-stage widths, and the study arm end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunelab.evaluation.flops import count_params
from prunelab.models import build_model
from prunelab.pruning.structured import channel_layers
from prunelab.runs import structured as structured_runs
from prunelab.runs.search import guided, guided_keep_counts, stage_of_convs, uniform_matching
from prunelab.spec import DataSpec, ModelSpec
from prunelab.spec.studies import MethodSpec, RethinkingStudy
from prunelab.store import RunStore
from prunelab.studies import run_study
from prunelab.studies.rethinking import method_specs
from prunelab.training.config import TrainConfig


def test_stages_group_convs_by_output_size() -> None:
    vgg = build_model("vgg11", (3, 32, 32), 10, seed=0, width=0.0625)
    convs = [layer.conv for layer in channel_layers(vgg)]
    sizes = stage_of_convs(vgg, (3, 32, 32), convs)
    # VGG-11: 64 | M | 128 | M | 256 256 | M | 512 512 | M | 512 512 (sizes 32, 16, 8, 4, 2)
    assert [sizes[c][0] for c in convs] == [32, 16, 8, 8, 4, 4, 2, 2]


def test_guided_widths_average_each_stage_over_the_found_architectures() -> None:
    vgg = build_model("vgg11", (3, 32, 32), 10, seed=0, widths=[8, 16, 32, 32, 64, 64, 64, 64])
    convs = [layer.conv for layer in channel_layers(vgg)]
    found = [
        {convs[2]: list(range(16)), convs[3]: list(range(8))},  # stage 8x8: 16/32 and 8/32
        {convs[2]: list(range(24)), convs[3]: list(range(32))},  # 24/32 and 32/32
    ]
    counts = guided_keep_counts(vgg, (3, 32, 32), found)
    # stage 8x8 keeps (0.5 + 0.25 + 0.75 + 1.0) / 4 = 0.625 of 32 -> 20 in both of its convs
    assert counts == {convs[2]: 20, convs[3]: 20}
    pruned = guided(vgg, (3, 32, 32), found)
    widths = [m.out_channels for m in pruned.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [8, 16, 20, 20, 64, 64, 64, 64]


def test_uniform_matching_hits_the_target_parameter_count() -> None:
    model = build_model("cnn1d", (1, 40), 10, seed=0, channels=32, bn=True)
    full = count_params(model)
    pruned, ratio = uniform_matching(model, 0.4 * full)
    assert 0 < ratio < 1
    assert abs(count_params(pruned.model) - 0.4 * full) < 0.05 * full


@pytest.mark.slow
def test_the_study_arm_trains_found_uniform_and_guided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(structured_runs, "LATENCY_TIMING", {"warmup": 0, "repeats": 1, "min_repeat_ms": 0.0})
    study = RethinkingStudy(
        name="search",
        data=DataSpec(name="synthetic"),
        model=ModelSpec(name="cnn1d", options={"bn": True, "channels": 8}),
        train=TrainConfig(epochs=2, batch_size=64, lr=0.05, augment=False),
        methods=(MethodSpec(name="slimming", options={"percent": 0.5}),),
        seeds=(0, 1),
        architecture_search=("slimming",),
    )
    summary, html = run_study(study, tmp_path, progress=False)
    assert summary.missing == 0
    (search,) = summary.search
    assert {arm: est.n for arm, est in search.accuracy.items()} == {"found": 2, "uniform": 2, "guided": 2}
    assert set(search.versus_uniform) == {"found", "guided"}
    store = RunStore(tmp_path)
    specs = method_specs(study, study.methods[0], 0)
    prune, uniform = store.result(specs["pruned"]) or {}, store.result(specs["uniform"]) or {}
    assert abs(uniform["params"] - prune["params"]["pruned"]) <= 0.1 * prune["params"]["pruned"]
    assert [p.seed for p in specs["guided"].parents()] == [0, 1]
    text = (html.parent / "report.md").read_text()
    assert (
        "## Pruning as architecture search" in text and (html.parent / "parameter_efficiency.png").is_file()
    )


def test_architecture_search_needs_a_listed_channel_method() -> None:
    with pytest.raises(ValueError, match="not among the methods"):
        RethinkingStudy(methods=("l1norm",), architecture_search=("slimming",))
    with pytest.raises(ValueError, match="needs a channel method"):
        RethinkingStudy(methods=("weight_level",), architecture_search=("weight_level",))
