"""The study registry: each study kind registers its spec type, its runs, its summary and its report
writer (and, for the command line, its presets and shortcut flags); one :func:`prunelab.studies.run_study`
and one :func:`prunelab.studies.rebuild_report` serve every kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunelab.errors import PrunelabError
from prunelab.registry import Registry

#: How a shortcut flag's text becomes a value: a comma-separated list of names or numbers, a number,
#: a whole number or a string.
FlagType = str  # "names" | "floats" | "int" | "float" | "str"


@dataclass(frozen=True)
class Flag:
    """A command-line shortcut of a study kind: ``--<name>`` (dashes for underscores).

    Attributes:
        name: the key the kind's preset function receives.
        help: one line for ``--help``.
        type: ``"names"`` (comma-separated), ``"floats"`` (comma-separated numbers), ``"int"``,
            ``"float"`` or ``"str"``.
    """

    name: str
    help: str
    type: FlagType = "str"


def _no_conclusions(summary: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class StudyKind:
    """A registered study kind.

    Attributes:
        name: ``study:`` in YAML, the command name on the CLI, ``kind`` in ``study.json``.
        spec_type: the pydantic model of the study's grid (validated as a whole before anything runs).
        runs: ``runs(study) -> [run spec]``: every stored run, deduplicated, in a stable order.
        summarize: ``summarize(study, {run hash: result or None}) -> summary`` (None: not finished).
        report: ``report(summary, folder) -> path of report.html``.
        description: one line for listings and ``--help``.
        preset: ``preset(name, shortcut values) -> study payload`` (a dict for ``spec_type``), or None
            when the kind has no command of its own (YAML and Python only).
        presets: valid preset names, the first the default.
        flags: the shortcut flags ``preset`` understands; every other field is reachable by ``--set``.
        conclusions: ``conclusions(summary) -> lines`` the CLI prints after running.
    """

    name: str
    spec_type: type[Any]
    runs: Callable[[Any], list[Any]]
    summarize: Callable[[Any, Mapping[str, dict[str, Any] | None]], Any]
    report: Callable[[Any, Path], Path]
    description: str
    preset: Callable[[str, Mapping[str, Any]], dict[str, Any]] | None = None
    presets: tuple[str, ...] = ("default",)
    flags: tuple[Flag, ...] = ()
    conclusions: Callable[[Any], list[str]] = field(default=_no_conclusions)

    def build(self, preset: str | None, values: Mapping[str, Any]) -> dict[str, Any]:
        """The study payload of ``preset`` (default: the first) with the shortcut ``values``."""
        if self.preset is None:
            raise PrunelabError(f"study kind {self.name!r} has no presets; write its spec in YAML")
        name = preset or self.presets[0]
        if name not in self.presets:
            raise PrunelabError(f"unknown preset {name!r}; valid choices: {', '.join(self.presets)}")
        return self.preset(name, values)


STUDIES: Registry[StudyKind] = Registry("study kind")


def register_study(kind: StudyKind) -> StudyKind:
    """Register a study kind (a plugin's too); returns it."""
    return STUDIES.add(kind.name, kind)


def kind_of(study: Any) -> StudyKind:
    """The first registered kind whose spec type ``study`` is."""
    for _, kind in STUDIES.items():
        if isinstance(study, kind.spec_type):
            return kind
    raise PrunelabError(f"{type(study).__name__} is not a registered study type; valid: {', '.join(STUDIES)}")
