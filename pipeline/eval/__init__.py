"""Evaluation harnesses: measured on data, never used by the running pipeline."""
