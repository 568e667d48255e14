"""Prefect flows over the DVC stages; no training logic lives here."""
