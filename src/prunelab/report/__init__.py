"""Study reports: Markdown and a self-contained HTML page with plots."""

from prunelab.report.sanity import write_sanity_report

__all__ = ["write_sanity_report"]
