"""Which backend keeps the environments: a state URL made a store.

The URL is, first found: the one given (``--state URL``, ``Runner(state=...)``), then
``RUNNER_STATE``, then ``state.url`` in the working directory's ``runner.toml``, else
the folder ``data/`` of the working directory. Two kinds:

- ``file:PATH``: JSON files under PATH (relative to the working directory, or
  absolute): :class:`~runner.store.files.FileStore`;
- ``postgresql://...`` (or ``postgres://``): a PostgreSQL database,
  :class:`~runner.store.postgres.PostgresStore` (needs the extra ``postgres``).
"""

from __future__ import annotations

import os

from runner.errors import InputError
from runner.settings import DEFAULT_SNAPSHOTS, load_settings
from runner.struct import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    from runner.store.contract import Store

__all__ = ["StateChoice", "choose", "open_store", "open_url"]

_PG_SCHEMES = ("postgresql://", "postgres://")


@struct(frozen=True)
class StateChoice:
    """The state URL a command uses, and where the choice came from."""

    url: str
    source: str
    """``given``, ``RUNNER_STATE``, the ``runner.toml`` it came from, or ``default``."""
    snapshots: int = DEFAULT_SNAPSHOTS


def choose(workdir: str | os.PathLike[str], given: str | None = None) -> StateChoice:
    """The state URL for ``workdir``: ``given``, else ``RUNNER_STATE``, else
    ``runner.toml``'s ``state.url``, else ``file:data``."""
    settings = load_settings(workdir)
    if given:
        return StateChoice(given, "given", settings.snapshots)
    env = os.environ.get("RUNNER_STATE")
    if env:
        return StateChoice(env, "RUNNER_STATE", settings.snapshots)
    if settings.state_url:
        return StateChoice(settings.state_url, str(settings.file), settings.snapshots)
    return StateChoice("file:data", "default", settings.snapshots)


def is_postgres(url: str) -> bool:
    return url.startswith(_PG_SCHEMES)


def open_url(
    url: str, workdir: str | os.PathLike[str], *, snapshots: int = DEFAULT_SNAPSHOTS
) -> Store:
    """The store ``url`` names (InputError, exit 2, for a URL of no known kind)."""
    if url.startswith("file:"):
        path = url[len("file:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise InputError(
                f"the state URL {url!r} names no folder",
                hint="write file:PATH, e.g. file:data (see docs/configuration.md)",
            )
        from runner.store.files import FileStore

        store = FileStore(workdir, path, keep_snapshots=snapshots)
        if os.path.isabs(store.relative(store.root_path)):
            # records name their files relative to the working directory, and every path
            # in a record must stay inside it (it is refused otherwise)
            raise InputError(
                f"the state folder of {url!r} is outside the working directory "
                f"{os.fspath(workdir)}",
                hint="keep it inside (e.g. file:data), or run with --workdir set to a "
                "folder that holds it",
            )
        return store
    if is_postgres(url):
        from runner.store.postgres import PostgresStore

        return PostgresStore(url, keep_snapshots=snapshots)
    raise InputError(
        f"unknown kind of state URL: {url!r}",
        hint="use file:PATH (files in a folder) or postgresql://host/database (see "
        "docs/configuration.md)",
    )


def open_store(workdir: str | os.PathLike[str], given: str | None = None) -> Store:
    """The store of ``workdir`` (see :func:`choose`)."""
    choice = choose(workdir, given)
    return open_url(choice.url, workdir, snapshots=choice.snapshots)
