"""Tests of the built-in step plugins (the steps package) against real programs."""
