"""The root key: read from the environment or from a private key file, or created.

This module owns where the root key comes from and the checks that keep its file
private. It hands the key to the caller as a ``bytearray`` for the caller to zero once
the HSM holds it; it keeps no copy, and never puts key bytes (raw or base64) in an
exception message or a log.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from keyplane.errors import RootKeyError
from keyplane.storage._files import create_private_file, fsync_dir, make_private_dir

ROOT_KEY_ENV: Final = "KEYPLANE_ROOT_KEY"
"""The environment variable that holds the root key as base64 of 32 bytes."""

ROOT_KEY_BYTES: Final = 32

# A key file holds 44 characters of base64 and a newline; anything much longer is
# not a key file, and reading it whole would be pointless.
_MAX_FILE_BYTES: Final = 256


def load_root_key(
    path: Path, *, create: bool, environ: Mapping[str, str] = os.environ
) -> bytearray:
    """Return the 32-byte root key.

    The key comes from ``KEYPLANE_ROOT_KEY`` when that is set (the file is then not
    touched), else from the file at ``path``, which must be a regular file of the
    current user that no group or other user may read or write and that holds one line
    of base64. With ``create`` a missing file is created (mode 0600, its directory
    0700 if missing) with a fresh random key, flushed to disk before returning.

    Args:
        path: The key file.
        create: Whether to create the file with a new key when it does not exist.
        environ: The environment to read ``KEYPLANE_ROOT_KEY`` from.

    Returns:
        The key, in a ``bytearray`` the caller should zero when done with it.

    Raises:
        RootKeyError: The variable or the file does not hold base64 of exactly 32
            bytes; the file is not a regular file, belongs to another user or is open
            to group or others; there is no key and ``create`` is false; or the file
            cannot be read or created.
    """
    value = environ.get(ROOT_KEY_ENV)
    if value is not None:
        return _decode(value.strip(), ROOT_KEY_ENV)
    path = Path(path)
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    if not create:
        raise RootKeyError(
            f"no root key: {ROOT_KEY_ENV} is not set and {path} does not exist; set"
            f" {ROOT_KEY_ENV} to the base64 of {ROOT_KEY_BYTES} random bytes, or put"
            f" that base64 on one line in {path} (mode 0600)"
        )
    return _create_key_file(path)


def _decode(text: str | bytes | bytearray, source: str) -> bytearray:
    if not text:
        raise RootKeyError(
            f"{source} is empty; it must hold the base64 of {ROOT_KEY_BYTES} bytes"
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # No exception chaining: the decoder's message may quote the input.
        raise RootKeyError(
            f"{source} is not valid base64; it must hold the base64 of"
            f" {ROOT_KEY_BYTES} bytes on one line"
        ) from None
    if len(raw) != ROOT_KEY_BYTES:
        raise RootKeyError(
            f"{source} holds {len(raw)} bytes; a root key is {ROOT_KEY_BYTES} bytes"
        )
    return bytearray(raw)


def _read_key_file(path: Path) -> bytearray:
    """Check and read the key file.

    Raises:
        FileNotFoundError: There is no file at ``path``.
        RootKeyError: The file is unsafe, malformed or unreadable.
    """
    # O_NONBLOCK: opening a FIFO planted at the path must fail the checks below, not
    # hang the start. It changes nothing for a regular file.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RootKeyError(
            f"cannot read the root key file {path}: {exc.strerror}"
        ) from exc
    buffer = bytearray(_MAX_FILE_BYTES + 1)
    try:
        # The checks look at the open file, not the path, so the file read is the
        # file checked.
        st = os.fstat(fd)
        _check_private(path, st)
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as file:
            size = 0
            while size < len(buffer):
                n = file.readinto(memoryview(buffer)[size:])
                if not n:
                    break
                size += n
    except OSError as exc:
        raise RootKeyError(
            f"cannot read the root key file {path}: {exc.strerror}"
        ) from exc
    finally:
        os.close(fd)
    try:
        if size > _MAX_FILE_BYTES:
            raise RootKeyError(
                f"the root key file {path} is too long; it must hold one line of"
                f" base64 of {ROOT_KEY_BYTES} bytes"
            )
        if size == 0:
            raise RootKeyError(
                f"the root key file {path} is empty (an interrupted first start?);"
                " if nothing was ever stored under it, delete it to have a new one"
                " created"
            )
        return _decode(bytes(buffer[:size]).strip(), f"the root key file {path}")
    finally:
        # Python cannot zero the immutable copies the decoder makes; it can at least
        # not leave the base64 text in the buffer it owns.
        buffer[:] = bytes(len(buffer))


def _check_private(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise RootKeyError(f"the root key file {path} is not a regular file")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise RootKeyError(
            f"the root key file {path} belongs to uid {st.st_uid}, not to the user"
            f" running keyplane (uid {uid}); run `chown {uid} {path}`"
        )
    if st.st_mode & 0o077:
        raise RootKeyError(
            f"the root key file {path} is open to group or others (mode"
            f" {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
        )


def _create_key_file(path: Path) -> bytearray:
    try:
        make_private_dir(path.parent)
        fd = create_private_file(path)
    except FileExistsError:
        # Another process created the file since this one looked: use its key.
        try:
            return _read_key_file(path)
        except FileNotFoundError:
            raise RootKeyError(
                f"cannot create the root key file {path}: the path exists but leads"
                " nowhere (a dangling symbolic link?)"
            ) from None
    except OSError as exc:
        raise RootKeyError(
            f"cannot create the root key file {path}: {exc.strerror}"
        ) from exc
    key = bytearray(secrets.token_bytes(ROOT_KEY_BYTES))
    line = bytearray(base64.b64encode(key) + b"\n")
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        fsync_dir(path.parent)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        # A half-written file would stop the next start; without it, the next start
        # simply creates a new key (none was handed out).
        path.unlink(missing_ok=True)
        key[:] = bytes(len(key))
        raise RootKeyError(
            f"cannot write the root key file {path}: {exc.strerror}"
        ) from exc
    finally:
        line[:] = bytes(len(line))
    return key
