"""Benchmarks (not imported by the app or the CLI): pneumo against the models users would pick instead
(:mod:`.run`, ``python -m pneumo.bench``) and the app in Chromium (:mod:`.browser`)."""
