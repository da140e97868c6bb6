"""The store: where environments live.

Owns the typed state record, the storage contract (small protocols every backend
implements) and the backends (files under ``data/``, a PostgreSQL database), with their
locks, event logs and artifacts (traces and run logs), and the choice between them.

May import: :mod:`runner.errors`, :mod:`runner.resources`, :mod:`runner.files`,
:mod:`runner.minischema`, :mod:`runner.settings`. Not the machine, run, api or cli
packages.
"""
