"""Tests of runner.run: sessions, phases, processes, inputs and secrets, the plugin registry."""
