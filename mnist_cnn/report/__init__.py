"""The ``report`` stage's core: collect the study's results (collect), check the
notebook's conclusions against them (findings), draw them (figures) and write
the report (render)."""
