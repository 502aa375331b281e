"""Private files and directories: created owner-only and made durable.

This module owns how storage creates the files that hold secrets at rest (the
database, its backups, the root key file) and their directories. It raises plain
``OSError``; the callers turn that into the keyplane error that fits them. It reads
and writes no content.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def fsync_dir(directory: Path) -> None:
    """Flush a directory, so that the entries just created in it survive power loss.

    Raises:
        OSError: The directory cannot be opened or flushed.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(directory: Path) -> None:
    """Create ``directory`` (and missing parents) unless it exists; it gets mode 0700.

    An existing directory is left as it is: it may be a shared place that keyplane
    does not own.

    Raises:
        OSError: The directory cannot be created.
    """
    try:
        directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    except FileExistsError:
        return
    # mkdir's mode is filtered by the umask; set it exactly, and flush the parent so
    # the new directory entry is as durable as the files we put in it.
    os.chmod(directory, PRIVATE_DIR_MODE)
    fsync_dir(directory.parent)


def create_private_file(path: Path) -> int:
    """Create ``path`` exclusively with mode 0600 and return a descriptor open for
    writing.

    The mode is set at creation (never a window with wider permissions) and then
    exactly, whatever the umask.

    Raises:
        FileExistsError: ``path`` exists (also when it is a dangling symbolic link).
        OSError: The file cannot be created.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd
