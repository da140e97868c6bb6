"""Tests of runner.store: the storage contract, the file store, its lock, crash safety."""
