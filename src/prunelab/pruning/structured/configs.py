"""Predefined layer-wise configurations of L1-norm filter pruning (Li et al. 2017), as coded by Liu et
al. 2019 (``cifar/l1-norm-pruning/vggprune.py``, ``res56prune.py``, ``res110prune.py``).

A configuration says how many filters each prunable conv keeps; which filters (the largest L1 norms)
is the pruning method's business. ``PREDEFINED.get("resnet56-b").keep_counts(model)`` maps module
names of a prunelab model to keep counts, and ``pruned_options(model)`` gives the model options of
the pruned architecture (``build_model(name, ..., **base_options, **pruned_options)``).

* **VGG-16-A** (``vgg16``): the target cfg ``[32, 64, M, 128, 128, M, 256, 256, 256, M, 256, 256,
  256, M, 256, 256, 256]``: conv1_1 and the six 512-channel convs halved, every other conv dense.
* **ResNet-56/110-A/B** (``resnet56``, ``resnet110``): only the first conv of each BasicBlock is
  pruned (block outputs feed the option-A shortcuts). Numbering convs from 1 with the stem = 1, the
  first convs are the even ids ``2, 4, ...``; those in ``skip`` stay dense, the rest keep
  ``int(C_out * (1 - ratio))`` filters (truncation, as the reference code) with the stage's ratio:

  ==========  =========================  ========================
  config      prune ratio per stage      ``skip`` (kept dense)
  ==========  =========================  ========================
  resnet56-a  0.1, 0.1, 0.1              16, 20, 38, 54
  resnet56-b  0.6, 0.3, 0.1              16, 18, 20, 34, 38, 54
  resnet110-a 0.5, 0.0, 0.0              36
  resnet110-b 0.5, 0.4, 0.3              36, 38, 74
  ==========  =========================  ========================

  Stages are the model's ``layer1..3`` (the reference's id boundaries 18/36 and 36/72/108 are the
  same split for these depths). Numbering is by block position, so projection shortcut convs
  (option B) neither shift the ids nor get pruned; the papers' networks use option A shortcuts
  (``base_options``).

Resulting counts (checked in ``tests/test_flops.py``), with Li et al. 2017 Table 1's "FLOPs" being
conv + linear multiply-accumulates: VGG-16-A 5.40M parameters, 2.06e8 MACs (-34.2 %); ResNet-56-A
0.77M, 1.12e8 (-10.4 %); ResNet-56-B 0.73M, 9.09e7 (-27.6 %); ResNet-110-A 1.68M, 2.13e8 (-15.9 %);
ResNet-110-B 1.16M, 1.55e8 (-38.6 %).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from prunelab.errors import PrunelabError
from prunelab.models.resnet import BasicBlock
from prunelab.registry import Registry

#: A keep-count rule: the model (already checked to be the right architecture) -> {conv name: keep}.
KeepRule = Callable[[nn.Module], dict[str, int]]

LI_2017 = "Li et al. 2017, Pruning Filters for Efficient ConvNets; cfg from Liu et al. 2019 (l1-norm-pruning)"


@dataclass(frozen=True)
class PredefinedConfig:
    """A paper's fixed per-layer filter counts for one architecture.

    Attributes:
        name: registry name, e.g. ``"resnet56-b"``.
        model: the model registry name it applies to, e.g. ``"resnet56"``.
        paper: where the configuration comes from.
        description: one line.
        base_options: model options of the paper's unpruned network (e.g. ``{"shortcut": "A"}``);
            the counts do not depend on them.
        kind: ``"vgg"`` (``widths`` = every conv) or ``"resnet"`` (``widths`` = every block's conv1).
    """

    name: str
    model: str
    paper: str
    description: str
    base_options: Mapping[str, Any]
    kind: str
    rule: KeepRule = field(repr=False)

    def keep_counts(self, model: nn.Module) -> dict[str, int]:
        """``{module name of each prunable conv: filters to keep}``, in module order.

        Every conv the configuration considers is listed, the dense ones with their full count.
        Raises :class:`PrunelabError` if ``model`` is not a ``self.model`` network.
        """
        built = getattr(model, "prunelab_name", None)
        if built is not None and built != self.model:
            raise PrunelabError(f"config {self.name!r} applies to model {self.model!r}, got {built!r}")
        return self.rule(model)

    def pruned_options(self, model: nn.Module) -> dict[str, Any]:
        """Model options describing the pruned architecture (add them to the unpruned model's options).

        VGG: ``{"widths": [...]}`` (every conv); ResNet: ``{"widths": [...]}`` (every block's conv1).
        """
        keep = self.keep_counts(model)
        return {"widths": list(keep.values())}


PREDEFINED: Registry[PredefinedConfig] = Registry("predefined pruning config")


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _vgg_rule(model_name: str, target: list[int]) -> KeepRule:
    def rule(model: nn.Module) -> dict[str, int]:
        convs = _convs(model)
        if len(convs) != len(target):
            raise PrunelabError(
                f"{model_name} has {len(target)} conv layers, this model has {len(convs)}; "
                f"build it with build_model({model_name!r}, ...)"
            )
        keep: dict[str, int] = {}
        for (name, conv), count in zip(convs, target, strict=True):
            if conv.out_channels < count:
                raise PrunelabError(
                    f"{name} has {conv.out_channels} filters, fewer than the {count} the config keeps"
                )
            keep[name] = count
        return keep

    return rule


def _resnet_rule(
    model_name: str, blocks_per_stage: int, ratios: tuple[float, float, float], skip: frozenset[int]
) -> KeepRule:
    def rule(model: nn.Module) -> dict[str, int]:
        stages = [getattr(model, f"layer{s}", None) for s in (1, 2, 3)]
        if not all(isinstance(stage, nn.Sequential) for stage in stages) or any(
            len(stage) != blocks_per_stage or not all(isinstance(b, BasicBlock) for b in stage)
            for stage in stages
            if isinstance(stage, nn.Sequential)
        ):
            raise PrunelabError(
                f"{model_name} needs 3 stages of {blocks_per_stage} BasicBlocks (layer1..3); "
                f"build it with build_model({model_name!r}, ...) without a blocks option"
            )
        keep: dict[str, int] = {}
        block = 0
        for s, (stage, ratio) in enumerate(zip(stages, ratios, strict=True), start=1):
            assert isinstance(stage, nn.Sequential)
            for i, module in enumerate(stage):
                assert isinstance(module, BasicBlock)
                layer_id = 2 + 2 * block  # stem = 1, then conv1, conv2 of each block in order
                out = module.conv1.out_channels
                # res56prune.py: num_keep = int(out_channels * (1 - prune_prob_stage)).
                keep[f"layer{s}.{i}.conv1"] = out if layer_id in skip else int(out * (1 - ratio))
                block += 1
        return keep

    return rule


def _register_vgg16_a() -> None:
    target = [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]
    PREDEFINED.add(
        "vgg16-a",
        PredefinedConfig(
            name="vgg16-a",
            model="vgg16",
            paper=LI_2017,
            description="VGG-16-pruned-A: conv1_1 and conv4_1..conv5_3 halved (cfg of vggprune.py)",
            base_options={"classifier": "rethinking", "bn_gamma": 0.5},
            kind="vgg",
            rule=_vgg_rule("vgg16", target),
        ),
    )


#: (config name, depth, per-stage prune ratios, skip ids) of res56prune.py / res110prune.py.
_RESNET_CONFIGS: tuple[tuple[str, int, tuple[float, float, float], frozenset[int]], ...] = (
    ("resnet56-a", 56, (0.1, 0.1, 0.1), frozenset({16, 20, 38, 54})),
    ("resnet56-b", 56, (0.6, 0.3, 0.1), frozenset({16, 18, 20, 34, 38, 54})),
    ("resnet110-a", 110, (0.5, 0.0, 0.0), frozenset({36})),
    ("resnet110-b", 110, (0.5, 0.4, 0.3), frozenset({36, 38, 74})),
)


def _register_resnets() -> None:
    for name, depth, ratios, skip in _RESNET_CONFIGS:
        ratio_text = ", ".join(f"{r:.0%}" for r in ratios)
        PREDEFINED.add(
            name,
            PredefinedConfig(
                name=name,
                model=f"resnet{depth}",
                paper=LI_2017,
                description=(
                    f"ResNet-{depth}-pruned-{name[-1].upper()}: block conv1s pruned {ratio_text} per stage, "
                    f"dense at ids {sorted(skip)}"
                ),
                base_options={"shortcut": "A"},
                kind="resnet",
                rule=_resnet_rule(f"resnet{depth}", (depth - 2) // 6, ratios, skip),
            ),
        )


_register_vgg16_a()
_register_resnets()
