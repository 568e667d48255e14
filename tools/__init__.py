"""Helpers around the pipeline (not stages): experiment comparison."""
