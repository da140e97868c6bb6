"""The public Python API: :class:`Runner`, one method per command, typed results.

May import every package below it (machine, store, run). The CLI and the dashboard
are its clients; nothing here prints or exits.
"""
