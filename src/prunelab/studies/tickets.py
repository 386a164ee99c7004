"""The ticket study (Su et al. 2020): initial tickets (SNIP, GraSP, the lottery ticket rewound to
init), partially-trained tickets (learning-rate rewinding, weight rewinding), hybrid tickets and
random tickets (smart-ratio random masks), against the dense model, each under the sanity checks.

It is a :class:`~prunelab.spec.studies.SanityStudy` whose methods include the trained-weights
tickets, so it shares the runs, summary, verdicts and report of the ``sanity`` kind; the dense runs
are the trunks the tickets score, so each is trained once per seed.
"""

from __future__ import annotations

from prunelab.presets import tickets_preset
from prunelab.spec.studies import SanityStudy
from prunelab.studies.registry import Flag, StudyKind, register_study
from prunelab.studies.sanity import SANITY, SANITY_FLAGS

TICKETS = register_study(
    StudyKind(
        "tickets",
        SanityStudy,
        runs=SANITY.runs,
        summarize=SANITY.summarize,
        report=SANITY.report,
        description="Su et al. 2020: initial, partially-trained, hybrid and random tickets under the checks",
        preset=tickets_preset,
        presets=("default", "paper"),
        flags=(
            *[f for f in SANITY_FLAGS if f.name != "random_tickets"],
            Flag(
                "imp_fraction",
                "Reach each density by IMP at this per-round fraction (default one-shot).",
                "float",
            ),
        ),
        conclusions=SANITY.conclusions,
    )
)
