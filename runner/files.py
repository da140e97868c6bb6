"""Writing files so that a crash leaves the old content or the new, never a mix.

One helper, :func:`replace_atomically`, writes every file the runner replaces (state
records, rendered templates, OpenTofu variable files, the machine cache): a unique
temp file beside the target, written, optionally fsynced, given its mode, then renamed
over the target (a link at the target is replaced, never followed), and the folder
fsynced when the write must survive a power loss.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:  # the interpreter's own SHA-256: hashlib would load OpenSSL first (milliseconds)
        from _sha256 import sha256
    except ImportError:  # another interpreter or version
        from hashlib import sha256

__all__ = [
    "FILE_MODE",
    "LIMITS",
    "TooLarge",
    "fsync_dir",
    "read_limited",
    "replace_atomically",
    "sha256",
    "write_all",
    "write_new",
]

#: The most the runner reads of each kind of file (bytes): anything longer is refused
#: with a message, never read whole (``--machine /dev/zero`` must not fill the memory).
LIMITS = {
    "machine": 16 * 1024 * 1024,
    "config": 4 * 1024 * 1024,
    "secret": 1024 * 1024,
    "state": 64 * 1024 * 1024,
    "events": 512 * 1024 * 1024,
    "artifact": 256 * 1024 * 1024,
    "cache": 64 * 1024 * 1024,
}


class TooLarge(ValueError):
    """A file is longer than the runner reads of its kind, or is not a regular file."""


def _size_text(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB" if size >= 1024 * 1024 else f"{size} bytes"


def read_limited(path: str | os.PathLike[str], kind: str, *, follow: bool = True) -> bytes:
    """The bytes of ``path``, a regular file no longer than ``LIMITS[kind]``; TooLarge
    (saying which) otherwise. Without ``follow`` a symbolic link is not followed (ELOOP)."""
    limit = LIMITS[kind]
    # O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise TooLarge("is not a regular file (a device or a pipe)")
        if info.st_size > limit:
            raise TooLarge(
                f"is larger than the {_size_text(limit)} the runner reads of a {kind} file"
            )
        chunks = []
        size = 0
        while True:  # plain reads: no buffered file object (10,000 records in a listing)
            chunk = os.read(fd, max(info.st_size - size, 0) + 1 if size <= limit else 1)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise TooLarge(
                    f"is larger than the {_size_text(limit)} the runner reads of a {kind} file"
                )
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)
    return data


#: Files the runner writes are its user's only.
FILE_MODE = 0o600
#: Temp files are ``.<name>.<pid>.<random>.tmp`` beside their target.
TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """The start of the names of ``name``'s temp files (for sweeping leftovers)."""
    return f".{name}."


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_new(
    path: str | os.PathLike[str], data: bytes, *, mode: int = FILE_MODE, sync: bool = False
) -> None:
    """Create ``path`` (it must not exist) holding ``data``, with ``mode`` whatever the
    umask; with ``sync``, fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(
    path: str | os.PathLike[str], data: bytes, *, mode: int = FILE_MODE, durable: bool = True
) -> None:
    """Write ``data`` to a unique temp file beside ``path`` and rename it over ``path``.

    With ``durable`` the temp file is fsynced before the rename and the folder after
    it, so the new content survives a power loss; without, a crash still leaves the old
    file or the new one, never a mix.
    """
    folder, name = os.path.split(os.fspath(path))  # a plain path: pathlib not needed
    unique = f"{os.getpid()}.{os.urandom(4).hex()}"
    temp = os.path.join(folder, f"{temp_prefix(name)}{unique}{TEMP_SUFFIX}")
    try:
        write_new(temp, data, mode=mode, sync=durable)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        fsync_dir(folder or os.curdir)
