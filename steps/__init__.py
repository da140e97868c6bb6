"""Built-in step plugins, registered under the `runner.steps` entry point group."""
