"""runner: move deployment environments through a lifecycle declared in machine.yaml."""

__version__ = "0.1.0"
