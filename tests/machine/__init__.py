"""Tests of runner.machine: loading and checking machine.yaml, templating, graphs, cache."""
