"""User code that extends prunelab: plugin modules and model factories.

A plugin is a module (dotted name) or a ``.py`` file that registers models, datasets, pruning
methods, allocations, checks, structured methods, executors or study kinds when imported. Loading
one executes its code, so load only files you trust. Worker processes load the same plugins before
they run anything, so registrations exist everywhere a run executes.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from prunelab.errors import PrunelabError


def load_plugins(plugins: Sequence[str]) -> None:
    """Import user modules (dotted names or ``.py`` paths) so their registrations exist.

    Raises:
        PrunelabError: a missing file or module, or a plugin that raises while importing (one line,
            naming the plugin and the error).
    """
    for plugin in plugins:
        try:
            _load(plugin)
        except PrunelabError:
            raise
        except Exception as exc:  # a plugin's own bug: one line, not a traceback
            raise PrunelabError(
                f"plugin {plugin!r} failed while loading: {type(exc).__name__}: {exc}"
            ) from None


def _load(plugin: str) -> None:
    if plugin.endswith(".py"):
        path = Path(plugin)
        if not path.is_file():
            raise PrunelabError(f"plugin file {plugin!r} does not exist")
        name = f"prunelab_plugin_{path.stem}"
        if name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PrunelabError(f"plugin file {plugin!r} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    else:
        try:
            importlib.import_module(plugin)
        except ImportError as exc:
            raise PrunelabError(f"plugin module {plugin!r} cannot be imported ({exc})") from None


#: Model factories registered from Python objects (not plugins): sent to worker processes by reference.
FACTORY_MODELS: dict[str, Any] = {}


def model_factory_name(factory: Callable[..., nn.Module]) -> str:
    """Register ``factory`` (any callable returning an ``nn.Module``) as a model and return its name.

    The name is the factory's ``__name__`` (lower-cased), so it names the runs and enters their
    hashes: give distinct factories distinct names. A factory may take ``(input_shape, num_classes,
    **options)`` like a registered constructor, or no positional argument at all (``options`` are
    passed as keywords). Registering the same factory twice is a no-op; another callable under a
    taken name is an error.
    """
    from prunelab.models.registry import MODELS, ModelEntry

    name = str(getattr(factory, "__name__", "")).lower()
    if not name or name == "<lambda>":
        raise PrunelabError("a model factory needs a name: use a def'd function or class, not a lambda")
    if name in MODELS:
        if FACTORY_MODELS.get(name) is factory:
            return name
        raise PrunelabError(f"model {name!r} is already registered; rename the factory")
    MODELS.add(name, ModelEntry(_constructor(factory), "custom", 0, f"user factory {name}"))
    FACTORY_MODELS[name] = factory
    return name


def _constructor(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        params = []  # type: ignore[assignment]
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) >= 2:
        return factory
    return _NoShape(factory)


class _NoShape:
    """Adapts a factory that takes no shape: ``(input_shape, num_classes, **options) -> factory(**options)``."""

    def __init__(self, factory: Callable[..., nn.Module]) -> None:
        self.factory = factory

    def __call__(self, input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
        model = self.factory(**options)
        if not isinstance(model, nn.Module):
            raise PrunelabError(f"model factory returned {type(model).__name__}, not an nn.Module")
        return model


def register_factories(factories: dict[str, Any]) -> None:
    """Register factories sent from the driver (in a worker process)."""
    for factory in factories.values():
        model_factory_name(factory)
