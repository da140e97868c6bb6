"""The public Python API: :class:`~runner.api.runner.Runner`, one method per command,
and the typed results of :mod:`runner.api.results`.

May import every package below it (machine, store, run). The CLI and the dashboard
are its clients; nothing here prints or exits.
"""
