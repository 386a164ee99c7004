"""VGG with BatchNorm for CIFAR-sized images (as in SNIP/GraSP, Su et al. 2020, Liu et al. 2019/2022).

Options describe every width, so a physically pruned VGG is ``vgg16`` + ``widths=[...]`` + an ordinary
state dict (module names do not change with the widths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunelab.errors import PrunelabError, invalid_choice
from prunelab.models._common import image_shape, init_scheme, init_weights_, positive_int
from prunelab.models.registry import ModelConstructor, register_model
from prunelab.options import as_bool, as_positive_float, as_shape

#: Simonyan & Zisserman's configurations A, B, D, E; an int is a conv3x3 width, "M" a 2x2 max-pool.
#: The CIFAR pruning code drops the fifth, last pool: the 32x32 map is 2x2 after the features and is
#: then averaged (AvgPool2d(2)); adaptive average pooling to 1x1 does the same and fits any size.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}

#: Classifier heads: ``linear`` = one ``Linear(C, classes)`` (Su et al.; Network Slimming's CIFAR VGG);
#: ``rethinking`` = ``Linear(C, h)-BN1d(h)-ReLU-Linear(h, classes)`` with ``h = 512`` by default, the
#: CIFAR VGG of Li et al. 2017 as coded in Liu et al. 2019 (``cifar/l1-norm-pruning/models/vgg.py``).
CLASSIFIERS = ("linear", "rethinking")


def conv_widths(depth: int) -> list[int]:
    """The out-channel count of every conv layer of VGG-``depth``, in order (pools left out)."""
    return [int(item) for item in VGG_CONFIGS[depth] if item != "M"]


class VGG(nn.Module):
    """CIFAR VGG-BN: ``features`` (conv3x3-BN-ReLU and max-pools), global average pool, a classifier.

    Input ``(B, C, H, W)``, output ``(B, num_classes)``. Convs are 3x3 with padding 1; a max-pool is
    built only while the map (as computed from ``input_shape``) is at least 2x2, so 8x8 inputs work.
    Channel counts are the configuration's times ``width`` (rounded, at least 1), or exactly
    ``widths`` (one per conv) when given. The classifier is ``Linear(last_channels, num_classes)``
    (``classifier="linear"``) or ``Sequential(Linear(last, hidden), BN1d, ReLU, Linear(hidden,
    num_classes))`` (``"rethinking"``). Init: scheme ``init`` (formulas in
    :data:`~prunelab.models._common.INIT_SCHEMES`); by default conv Kaiming normal (fan_out, i.e.
    ``N(0, sqrt(2 / (9 · C_out)))``) with zero bias, linear ``N(0, 0.01)`` with zero bias; then BN2d
    weight ``bn_gamma`` (1; Liu et al.'s VGGs use 0.5) and bias 0, BN1d 1/0.
    """

    def __init__(
        self,
        config: Sequence[int | str],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        conv_bias: bool = False,
        width: float = 1.0,
        widths: Sequence[int] | None = None,
        classifier: str = "linear",
        classifier_hidden: int = 512,
        bn_gamma: float = 1.0,
        init: str = "conv_fan_out_linear_normal_0.01",
    ) -> None:
        super().__init__()
        channels, height, img_width = input_shape
        layers: list[nn.Module] = []
        conv_index = 0
        for item in config:
            if item == "M":
                if min(height, img_width) >= 2:  # pooling a 1-pixel map would leave nothing
                    layers.append(nn.MaxPool2d(2))
                    height, img_width = height // 2, img_width // 2
                continue
            out = int(widths[conv_index]) if widths is not None else max(1, round(int(item) * width))
            conv_index += 1
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=conv_bias),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier: nn.Module
        if classifier == "linear":
            self.classifier = nn.Linear(channels, num_classes)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(channels, classifier_hidden),
                nn.BatchNorm1d(classifier_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(classifier_hidden, num_classes),
            )
        init_weights_(self, init)
        if bn_gamma != 1.0:
            # Liu et al. (and Network Slimming) start BN2d scales at 0.5; BN1d keeps 1.
            for module in self.features.modules():
                if isinstance(module, nn.BatchNorm2d):
                    nn.init.constant_(module.weight, bn_gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _widths_option(value: object, depth: int) -> list[int]:
    """Validate the ``widths`` option: one positive int per conv layer of VGG-``depth``."""
    expected = len(conv_widths(depth))
    widths = list(as_shape(value, f"vgg{depth} option widths"))
    if len(widths) != expected:
        raise PrunelabError(
            f"vgg{depth} option widths must give {expected} conv widths (one per conv layer), "
            f"got {len(widths)}: {value!r}"
        )
    return widths


def vgg(depth: int) -> ModelConstructor:
    """A constructor for VGG-``depth``; see :func:`build_vgg` for the options."""
    config = VGG_CONFIGS[depth]

    def construct(
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        conv_bias: bool = False,
        width: float = 1.0,
        widths: Sequence[int] | None = None,
        classifier: str = "linear",
        classifier_hidden: int | None = None,
        bn_gamma: float = 1.0,
        init: str = "conv_fan_out_linear_normal_0.01",
    ) -> nn.Module:
        name = f"vgg{depth}"
        head = str(classifier).lower()
        if head not in CLASSIFIERS:
            raise invalid_choice(f"{name} classifier", classifier, CLASSIFIERS)
        if classifier_hidden is not None and head != "rethinking":
            raise PrunelabError(
                f"{name} option classifier_hidden={classifier_hidden!r} needs classifier='rethinking' "
                f"(got classifier={classifier!r})"
            )
        scale = as_positive_float(width, "width")
        exact = None
        if widths is not None:
            if scale != 1.0:
                raise PrunelabError(f"{name}: give either widths or width, not both (width={width!r})")
            exact = _widths_option(widths, depth)
        return VGG(
            config,
            image_shape(input_shape, name),
            positive_int(num_classes, "num_classes"),
            conv_bias=as_bool(conv_bias, f"{name} option conv_bias"),
            width=scale,
            widths=exact,
            classifier=head,
            classifier_hidden=positive_int(
                512 if classifier_hidden is None else classifier_hidden, f"{name} option classifier_hidden"
            ),
            bn_gamma=as_positive_float(bn_gamma, f"{name} option bn_gamma"),
            init=init_scheme(init, name),
        )

    construct.__name__ = construct.__qualname__ = f"vgg{depth}"
    construct.__doc__ = (
        f"VGG-{depth} with BatchNorm for images ``(C, H, W)``.\n\n"
        "Options: ``conv_bias`` (False), ``width`` (channel multiplier, 1.0), ``widths`` (exact out-channel "
        f"count of each of the {len(conv_widths(depth))} convs; pools stay where the depth puts them), "
        "``classifier`` (``linear`` | ``rethinking``), ``classifier_hidden`` (512, rethinking head only), "
        "``bn_gamma`` (initial BN2d scale, 1.0), ``init`` (``conv_fan_out_linear_normal_0.01``).\n\n"
        "``init`` schemes (k = kernel size 3; BN gamma 1 / beta 0, then ``bn_gamma``):\n\n"
        "- ``conv_fan_out_linear_normal_0.01`` (default): conv ``N(0, sqrt(2/(k*k*C_out)))``, conv bias 0; "
        "linear ``N(0, 0.01)``, bias 0. Random_Pruning's VGGs; Liu et al. 2019's VGGs.\n"
        "- ``conv_fan_in_linear_normal_0.01``: conv ``N(0, sqrt(2/(k*k*C_in)))``, conv bias 0; linear "
        "``N(0, 0.01)``, bias 0. Su et al.'s VGG (with ``conv_bias=True``).\n"
        "- ``conv_fan_out_linear_default_zero_bias``: conv as the default; linear PyTorch default "
        "``U(-1/sqrt(n_in), 1/sqrt(n_in))``, bias 0.\n"
        "- ``conv_fan_out_linear_default``: conv as the default; linear weight and bias PyTorch default.\n"
        "- ``conv_linear_fan_in``: conv and linear weights ``N(0, sqrt(2/fan_in))``, biases PyTorch default.\n"
        "- ``torch_default``: PyTorch's ``reset_parameters`` for every conv and linear.\n\n"
        "Liu et al. 2019's L1-norm CIFAR VGG-16 is ``vgg16`` with ``classifier='rethinking', "
        "bn_gamma=0.5``; Su et al.'s VGG-19 is ``vgg19`` with ``conv_bias=True, "
        "init='conv_fan_in_linear_normal_0.01'``."
    )
    return construct


for _depth in VGG_CONFIGS:
    _convs = sum(1 for item in VGG_CONFIGS[_depth] if item != "M")
    register_model(
        f"vgg{_depth}",
        family="vgg",
        input_rank=2,
        description=f"CIFAR VGG-{_depth} with BatchNorm ({_convs} conv + 1 linear)",
    )(vgg(_depth))
del _depth, _convs
