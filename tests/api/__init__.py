"""Tests of runner.api: the commands as Python functions (model-based sequences, soak)."""
