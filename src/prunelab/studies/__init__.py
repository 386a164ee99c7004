"""The papers' studies as grids of specs, with their summaries and verdicts, and the study registry.

Built-in kinds: ``sanity`` and ``tickets`` (Su et al. 2020), ``lottery`` and ``rethinking`` (Liu et
al. 2019), ``scaling`` (Liu et al. 2022). ``run_study`` and ``rebuild_report`` serve every registered kind; a plugin registers its
own with :func:`register_study`.
"""

from prunelab.studies import lottery, rethinking, sanity, scaling, tickets
from prunelab.studies.pipeline import STUDY_FILE, load_study, rebuild_report, record_study, run_study
from prunelab.studies.registry import STUDIES, Flag, StudyKind, kind_of, register_study

__all__ = [
    "STUDIES",
    "STUDY_FILE",
    "Flag",
    "StudyKind",
    "kind_of",
    "load_study",
    "lottery",
    "rebuild_report",
    "record_study",
    "register_study",
    "rethinking",
    "run_study",
    "sanity",
    "scaling",
    "tickets",
]
