"""Dagster entry point: `dagster dev -f definitions.py` (or `dagster job execute -f ...`)."""

from infrakitchen_dagster import build_definitions

defs = build_definitions()
