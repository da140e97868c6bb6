"""The `runner` command line: a client of :mod:`runner.api`.

Owns argument parsing (typer, and a fast path for read-only commands), the rendering
of every result as text or one JSON document, the progress display and logging, and
the one place where errors become messages and exit codes.

May import everything else in the package; nothing imports it.
"""
