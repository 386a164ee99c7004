"""What studies found, as plain data: the summaries studies return and reports render.

Nothing here runs or trains; reports import only this package (and the specs), never the studies.
"""
