"""Presets, in one home: the model and training recipe each dataset defaults to, and each study
kind's ready-made grids (the payloads the CLI and ``prunelab run`` validate into study specs).

CIFAR uses Su et al.'s recipe (160 epochs, batch 64, lr 0.1 decayed at 50%/75%, weight decay 1e-4)
with VGG-19; the embedded datasets use short recipes that finish in seconds on a laptop CPU.
A study preset takes the shortcut values of its kind's flags (``None`` = not given) and returns a
plain dict; every other field is set with ``--set path=value`` on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prunelab.errors import PrunelabError
from prunelab.spec import OptionValue
from prunelab.spec.studies import ALL_CHECKS, RANDOM_TICKETS
from prunelab.training.config import TrainConfig
from prunelab.training.recipes import RANDOM_PRUNING_CIFAR


@dataclass(frozen=True)
class Preset:
    model: str
    train: TrainConfig


_SMALL = TrainConfig(epochs=30, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine", augment=False)

PRESETS: dict[str, Preset] = {
    "mnist1d": Preset("mlp", _SMALL),
    "digits": Preset("cnn2d", _SMALL),
    "synthetic": Preset(
        "mlp", TrainConfig(epochs=5, batch_size=32, lr=0.05, schedule="cosine", augment=False)
    ),
    "cifar10": Preset("vgg19", TrainConfig()),
    "cifar100": Preset("vgg19", TrainConfig()),
}


def preset_for(dataset: str) -> Preset:
    """The dataset's preset, or the paper recipe with an MLP for datasets without one."""
    return PRESETS.get(dataset.lower(), Preset("mlp", TrainConfig()))


def _at_least_one(values: Mapping[str, Any], *names: str) -> None:
    for name in names:
        value = values.get(name)
        if value is not None and value < 1:
            raise PrunelabError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _common(values: Mapping[str, Any], prefix: str, default_dataset: str = "mnist1d") -> dict[str, Any]:
    """The payload fields every grid on a dataset preset shares: name (``<prefix>-<data>-<model>``
    unless given), data, model, the dataset preset's recipe with --epochs / --lr applied, and seeds
    0..N-1 (3 unless given)."""
    _at_least_one(values, "seeds", "epochs")
    dataset = str(values.get("dataset") or default_dataset)
    preset = preset_for(dataset)
    model = str(values.get("model") or preset.model)
    train = preset.train.model_dump()
    for key in ("epochs", "lr"):
        if values.get(key) is not None:
            train[key] = values[key]
    return {
        "name": values.get("name") or f"{prefix}-{dataset}-{model}",
        "data": {"name": dataset},
        "model": {"name": model},
        "train": train,
        "seeds": list(range(values.get("seeds") or 3)),
    }


def _given(values: Mapping[str, Any], key: str, default: Any) -> Any:
    """``values[key]`` when given (an empty list counts), else ``default``."""
    return values[key] if values.get(key) is not None else default


#: The demo's model and recipe: an over-parameterised 1-D CNN on MNIST-1D (28k parameters, 95-96 %
#: dense), so pruned nets at moderate density stay close to dense, as the papers' CIFAR nets do; 16
#: epochs at batch 128 keep its 105 runs within about 3 minutes on 2 CPU cores.
DEMO_MODEL: dict[str, Any] = {"name": "cnn1d", "options": {"channels": 64, "bn": True}}
DEMO_TRAIN = TrainConfig(
    epochs=16, batch_size=128, lr=0.1, weight_decay=5e-4, schedule="cosine", augment=False
)
#: Su et al.'s VGG-19: conv biases (never pruned), conv N(0, sqrt(2/(k*k*C_in))), linear N(0, 0.01).
SU_VGG19: dict[str, Any] = {
    "name": "vgg19",
    "options": {"conv_bias": True, "init": "conv_fan_in_linear_normal_0.01"},
}
#: Su et al.'s three checks: random labels for the scoring data, layer-wise rearrangement, re-init.
DEMO_CHECKS = ("random_labels", "shuffle_mask", "reinit")


def sanity_preset(preset: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``default``: SNIP, GraSP, SynFlow and magnitude at densities 0.2 and 0.05, 3 seeds, every check,
    three random tickets and the dense model, on the dataset's preset model and recipe. ``demo``: the
    quickstart's study on MNIST-1D: the same methods, densities and random tickets with Su et al.'s
    three checks on an over-parameterised 1-D CNN (105 runs of 16 epochs). ``paper``: CIFAR-10 with
    Su et al.'s VGG-19 (their init and conv biases) and recipe, densities 0.1, 0.05 and 0.02."""
    demo, paper = preset == "demo", preset == "paper"
    common = _common(values, "demo" if demo else "sanity", default_dataset="cifar10" if paper else "mnist1d")
    if paper and not values.get("model"):
        common["model"] = dict(SU_VGG19)
    if demo:
        if not values.get("model"):
            common["model"] = dict(DEMO_MODEL)
            common["name"] = values.get("name") or f"demo-{common['data']['name']}-cnn1d"
        recipe = DEMO_TRAIN.model_dump()
        recipe.update({k: values[k] for k in ("epochs", "lr") if values.get(k) is not None})
        common["train"] = recipe
    return {
        **common,
        "methods": values.get("methods") or ["snip", "grasp", "synflow", "magnitude"],
        "densities": values.get("densities") or ([0.1, 0.05, 0.02] if paper else [0.2, 0.05]),
        "checks": _given(values, "checks", list(DEMO_CHECKS if demo else ALL_CHECKS)),
        "random_tickets": _given(values, "random_tickets", list(RANDOM_TICKETS)),
    }


#: Initial tickets, then partially-trained, then hybrid (Su et al.'s families).
TICKET_METHODS = ("snip", "grasp", "lottery", "lr_rewinding", "weight_rewinding", "hybrid")
#: The checks of Su et al. Section 4: random labels for the training the scores come from,
#: layer-wise rearrangement of the mask, and re-initialisation of the kept weights.
TICKET_CHECKS = ("random_labels", "shuffle_mask", "reinit")


#: The methods whose Su et al. code prunes conv weights only (LT_prune.py: the linear layer stays dense).
_CONV_ONLY_TICKETS = ("lottery", "weight_rewinding", "lr_rewinding", "finetune")


def tickets_preset(preset: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Su et al.'s ticket comparison: the ticket methods under random labels, layer-wise shuffling
    and re-init, smart-ratio random tickets and the dense trunks; one-shot unless ``imp_fraction``
    is given. ``default``: the dataset's preset model and recipe at densities 0.2 and 0.05.
    ``paper``: CIFAR-10 VGG-19 with Su et al.'s recipe at densities 0.1, 0.05 and 0.02 (sparsity
    90/95/98 %), the lottery-family tickets pruning conv weights only as their code does."""
    paper = preset == "paper"
    common = _common(values, "tickets", default_dataset="cifar10" if paper else "mnist1d")
    payload = {
        **common,
        "methods": values.get("methods") or list(TICKET_METHODS),
        "densities": values.get("densities") or ([0.1, 0.05, 0.02] if paper else [0.2, 0.05]),
        "checks": _given(values, "checks", list(TICKET_CHECKS)),
        "random_tickets": ["smart_ratio"],
        "include_dense": True,
        "imp_fraction": values.get("imp_fraction"),
    }
    if paper:
        payload["method_prunable"] = {m: {"scope": "conv"} for m in _CONV_ONLY_TICKETS}
        if not values.get("model"):
            payload["model"] = dict(SU_VGG19)
    return payload


def lottery_preset(preset: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Liu et al. 2019's lottery experiment: IMP levels 1..8 (20% per round) at lr 0.1 and 0.01,
    3 seeds. ``default``: the dataset's preset model and recipe, iterative pruning. ``paper``:
    CIFAR-10 VGG-16 (the Rethinking head) with the CIFAR recipe, iterative and one-shot arms, conv
    weights only (their lottery-ticket code keeps the classifier dense)."""
    _at_least_one(values, "levels")
    paper = preset == "paper"
    common = _common(values, "lottery", default_dataset="cifar10" if paper else "mnist1d")
    if paper and not values.get("model"):
        common["model"] = {"name": "vgg16", "options": {"classifier": "rethinking"}}
        common["name"] = values.get("name") or f"lottery-{common['data']['name']}-vgg16"
    return {
        **common,
        "learning_rates": values.get("lrs") or [0.1, 0.01],
        "levels": list(range(1, (values.get("levels") or 8) + 1)),
        "imp_fraction": _given(values, "imp_fraction", 0.2),
        "one_shot": paper,
        "prunable": {"scope": "conv"} if paper else {},
    }


#: Large models of the Rethinking study per dataset: each has BN after every conv (network slimming
#: needs its scales).
_RETHINKING_MODELS: dict[str, tuple[str, dict[str, OptionValue]]] = {
    "mnist1d": ("cnn1d", {"bn": True}),
    "synthetic": ("cnn1d", {"bn": True}),
    "digits": ("cnn2d", {}),
    "cifar10": ("vgg16", {}),
    "cifar100": ("vgg16", {}),
}

#: The small Rethinking preset's recipe on the embedded data: the paper's schedule shape (lr 0.1,
#: x0.1 at 50% and 75%) over 30 epochs, batch 128 so that the whole study fits in minutes on 2 CPU cores.
RETHINKING_SMALL_TRAIN = TrainConfig(epochs=30, batch_size=128, lr=0.1, weight_decay=5e-4, augment=False)

#: The small preset's fine-tuning (lr and epochs), chosen on a validation split; see rethinking_preset.
RETHINKING_SMALL_FINETUNE: dict[str, Any] = {"finetune_lr": 0.01, "finetune_epochs": 15}

#: Method options of both Rethinking presets: SFP as He et al. and the Rethinking code run it
#: (every conv soft-pruned, the scratch runs train the masked full-size network).
_RETHINKING_OPTIONS: dict[str, dict[str, OptionValue]] = {"sfp": {"variant": "all_convs_masked"}}
#: The small preset's extra method options: moderate pruning, so Scratch-B stays within a few times E.
_RETHINKING_SMALL_OPTIONS: dict[str, dict[str, OptionValue]] = {"slimming": {"percent": 0.5}}


def _predefined_for(model: str) -> str | None:
    """The name of the ``-A`` predefined L1-norm config of ``model`` (VGG-16-A, ResNet-56-A, ...), if any."""
    from prunelab.pruning.structured.configs import PREDEFINED

    want = f"{model}a".replace("-", "").replace("_", "").lower()
    for name in PREDEFINED:
        if str(name).replace("-", "").replace("_", "").lower() == want:
            return str(name)
    return None


def _method_options(pairs: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["slimming.percent=0.6"]`` -> ``{"slimming": {"percent": 0.6}}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if "." not in key or not sep:
            raise PrunelabError(f"--method-option must look like METHOD.key=value, got {pair!r}")
        method, option = key.split(".", 1)
        out.setdefault(method.strip().lower(), {})[option.strip()] = yaml.safe_load(value)
    return out


def _rethinking_methods(preset: str, model: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    from prunelab.models import MODELS
    from prunelab.pruning.structured import STRUCTURED_METHODS

    family = MODELS.get(model).family
    names = list(
        values.get("methods")
        or [n for n, m in STRUCTURED_METHODS.items() if m.kind != "block" or family == "resnet"]
    )
    given = _method_options(values.get("method_option"))
    chosen = []
    for method in names:
        canonical = STRUCTURED_METHODS.get(method).name
        options: dict[str, Any] = dict(_RETHINKING_OPTIONS.get(canonical, {}))
        if preset == "small":
            options.update(_RETHINKING_SMALL_OPTIONS.get(canonical, {}))
        if preset == "paper" and canonical == "l1norm":
            config = _predefined_for(model)
            if config is not None:
                options["config"] = config
        options.update(given.get(canonical, {}))
        chosen.append({"name": canonical, "options": options})
    return chosen


def rethinking_preset(preset: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``small``: embedded data (MNIST-1D cnn1d with BN), 30 epochs, 3 seeds, minutes on a CPU;
    ``paper``: CIFAR-10 VGG-16 (the paper's Linear-BN-ReLU-Linear head, BN scales at 0.5; ResNets
    with the Rethinking code's init) with the paper's 160-epoch recipe and 5 seeds, the L1-norm method
    at its predefined ``-A`` config. Both run SFP as its authors do (every conv soft-pruned, masked
    scratch runs). The methods default to every registered one that fits the model (block methods
    only for ResNets)."""
    from prunelab.data import DATASETS
    from prunelab.models import MODELS

    _at_least_one(values, "seeds", "epochs")
    data = str(values.get("dataset") or ("mnist1d" if preset == "small" else "cifar10")).lower()
    DATASETS.get(data)  # unknown names raise, naming the valid choices
    default_model, default_options = _RETHINKING_MODELS.get(data, ("cnn1d", {"bn": True}))
    model = str(values.get("model") or default_model).lower()
    MODELS.get(model)
    options: dict[str, Any] = dict(default_options) if model == default_model else {}
    if preset == "paper" and model.startswith("vgg"):
        options.update({"classifier": "rethinking", "bn_gamma": 0.5})
    if preset == "paper" and model.startswith("resnet"):
        options.update({"init": "conv_fan_out_linear_default"})  # the Rethinking code's CIFAR ResNet
    train = (RETHINKING_SMALL_TRAIN if DATASETS.get(data).embedded else TrainConfig()).model_dump()
    if values.get("epochs") is not None:
        train["epochs"] = values["epochs"]
    payload: dict[str, Any] = {
        "name": values.get("name") or f"rethinking-{preset}-{data}-{model}",
        "data": {"name": data},
        "model": {"name": model, "options": options},
        "train": train,
        "methods": _rethinking_methods(preset, model, values),
        "seeds": list(range(values.get("seeds") or (3 if preset == "small" else 5))),
    }
    if preset == "small" and DATASETS.get(data).embedded:
        # Chosen on a validation split (the last 500 MNIST-1D training examples), never on test: at
        # lr 0.001 for 7 epochs (the paper's recipe scaled to 30 epochs) fine-tuned models stayed at
        # 61-81 %; lr 0.01 for 15 epochs recovered best (82-94 %; README, Rethinking section).
        payload.update(RETHINKING_SMALL_FINETUNE)
    return payload


# -- the size-scaling study (Liu et al. 2022) ---------------------------------------------------
#: The small preset's recipe: Random_Pruning's (Nesterov, weight decay 5e-4, x0.1 at 50% / 75%) cut
#: to 20 epochs at batch 128 so the grid finishes in minutes on 2 CPU cores.
SCALING_SMALL_TRAIN = TrainConfig(
    epochs=20, batch_size=128, lr=0.1, nesterov=True, weight_decay=5e-4, milestones=(0.5, 0.75), augment=False
)
#: Random_Pruning's CIFAR ResNets are initialised kaiming_normal (fan_in) throughout.
_RP_RESNET = {"init": "conv_linear_fan_in"}


def _axis(family: str, axis: str, models: list[dict[str, Any]], values: list[float]) -> dict[str, Any]:
    return {"family": family, "axis": axis, "models": models, "values": values}


def _small_sizes() -> list[dict[str, Any]]:
    """MNIST-1D: the 1-D CNN deeper (2-5 stride-2 convs of 32 channels) and wider (16-128 channels,
    3 convs), and the MLP deeper (1-4 hidden layers of 100) and wider (2 hidden layers of 25-200);
    all with BatchNorm, as the paper's ResNets and VGGs (without it, a randomly pruned plain net's
    activations shrink with the density at every layer and its deeper members do not train)."""
    kernels = {2: [5, 3], 3: [5, 3, 3], 4: [5, 3, 3, 3], 5: [5, 3, 3, 3, 3]}
    return [
        _axis(
            "cnn1d",
            "depth",
            [
                {"name": "cnn1d", "options": {"bn": True, "channels": 32, "kernel_sizes": k}}
                for k in kernels.values()
            ],
            list(kernels),
        ),
        _axis(
            "cnn1d",
            "width",
            [
                {"name": "cnn1d", "options": {"bn": True, "channels": w, "kernel_sizes": kernels[3]}}
                for w in (16, 32, 64, 128)
            ],
            [16, 32, 64, 128],
        ),
        _axis(
            "mlp",
            "depth",
            [{"name": "mlp", "options": {"bn": True, "hidden": [100] * d}} for d in (1, 2, 3, 4)],
            [1, 2, 3, 4],
        ),
        _axis(
            "mlp",
            "width",
            [{"name": "mlp", "options": {"bn": True, "hidden": [w, w]}} for w in (25, 50, 100, 200)],
            [25, 50, 100, 200],
        ),
    ]


def _cifar_sizes() -> list[dict[str, Any]]:
    """The paper's CIFAR grid: ResNet-20/32/44/56/110 and VGG-11/13/16/19 deeper, ResNet-20 wider
    (base widths 8, 16, 24, 32: ``cifar_resnet_20_<W>``)."""
    depths = (20, 32, 44, 56, 110)
    return [
        _axis(
            "resnet",
            "depth",
            [{"name": f"resnet{d}", "options": dict(_RP_RESNET)} for d in depths],
            list(depths),
        ),
        _axis("vgg", "depth", [{"name": f"vgg{d}"} for d in (11, 13, 16, 19)], [11, 13, 16, 19]),
        _axis(
            "resnet20",
            "width",
            [{"name": "resnet20", "options": {**_RP_RESNET, "width": w}} for w in (8, 16, 24, 32)],
            [8, 16, 24, 32],
        ),
    ]


#: The beyond-accuracy sets of each dataset: (OOD sets, shifted test sets), all offline for MNIST-1D.
EVALUATION_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mnist1d": (("mnist1d_ood",), ("mnist1d_shift",)),
    "cifar10": (("svhn", "cifar100"), ()),
    "cifar100": (("svhn", "cifar10"), ()),
}
#: Attack sizes (pixel units): MNIST-1D signals are standardised floats; CIFAR pixels are in [0, 1].
EVALUATION_EPSILONS: dict[str, list[float]] = {
    "mnist1d": [0.05, 0.1, 0.2],
    "cifar10": [1 / 255, 2 / 255, 8 / 255],
}
EVALUATION_GROUPS = ("calibration", "ood", "adversarial", "shift")


def evaluation_preset(dataset: str, groups: Sequence[str]) -> dict[str, Any]:
    """The :class:`~prunelab.spec.evaluation.EvaluationConfig` payload measuring ``groups`` (any of
    calibration, ood, adversarial, shift, or ``all``) with the dataset's OOD/shift sets and epsilons."""
    wanted = set(EVALUATION_GROUPS) if "all" in groups else {g.lower() for g in groups}
    unknown = sorted(wanted - set(EVALUATION_GROUPS))
    if unknown:
        raise PrunelabError(
            f"unknown evaluation {unknown[0]!r}; valid choices: all, {', '.join(EVALUATION_GROUPS)}"
        )
    ood, shift = EVALUATION_SETS.get(dataset, ((), ()))
    epsilons = EVALUATION_EPSILONS.get(dataset, EVALUATION_EPSILONS["cifar10"])
    return {
        "calibration": "calibration" in wanted,
        "ood": list(ood) if "ood" in wanted else [],
        "attacks": ["fgsm", "pgd"] if "adversarial" in wanted else [],
        "epsilons": [0.0, *epsilons] if "adversarial" in wanted else [],
        "shift": list(shift) if "shift" in wanted else [],
    }


def scaling_preset(preset: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``small``: MNIST-1D, the 1-D CNN and the MLP grown in depth and width, densities 0.3 and 0.1,
    uniform and ERK, 3 seeds, 20 epochs: minutes on 2 CPU cores. ``cifar10`` / ``cifar100``: the paper's grid
    (ResNet-20..110, VGG-11..19, ResNet-20 at widths 8-32) at densities 0.9..0.1 with Random_Pruning's
    recipe (160 epochs); CIFAR-10 selects the best epoch on the last 5,000 training images and
    reports its test accuracy, as the authors' code does."""
    _at_least_one(values, "seeds", "epochs")
    small = preset == "small"
    dataset = "mnist1d" if small else preset
    train = (SCALING_SMALL_TRAIN if small else RANDOM_PRUNING_CIFAR).model_dump()
    data: dict[str, Any] = {"name": dataset}
    if preset == "cifar10":
        data["options"] = {"validation": 5000}
        train["checkpoint"] = "best_validation"
    if values.get("epochs") is not None:
        train["epochs"] = values["epochs"]
    groups = values.get("evaluate")
    payload: dict[str, Any] = {
        "name": values.get("name") or f"scaling-{dataset}",
        "data": data,
        "train": train,
        "sizes": _small_sizes() if small else _cifar_sizes(),
        "densities": values.get("densities") or ([0.3, 0.1] if small else [0.9, 0.7, 0.5, 0.3, 0.1]),
        "schemes": values.get("schemes") or ["uniform", "erk"],
        "seeds": list(range(values.get("seeds") or 3)),
    }
    if groups:
        names = [g.strip() for g in str(groups).split(",") if g.strip()]
        payload["evaluate"] = evaluation_preset(dataset, names)
    return payload
