"""Tests of runner.cli: the `runner` command line, run as a subprocess."""
