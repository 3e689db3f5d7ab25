"""Evaluation: per-AU metrics, prediction tables from aullava and other tools, reports."""
