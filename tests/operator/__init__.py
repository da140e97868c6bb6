"""The operator commands: exists, purge, inputs, force-state, snapshots, restore,
lineage, machine drift and filtered listings."""
