"""The root key: read from the environment or from a private key file, or created.

This module owns where the root key comes from and the checks that keep its file
private, and the files of a root key rotation: the next key staged beside the key file
(``root.key.next``), then renamed over it, and the data directory's lock that lets one
server or one offline rotation use the directory at a time. It hands keys to the caller
as a ``bytearray`` for the caller to zero once the HSM holds it; it keeps no copy, and
never puts key bytes (raw or base64) in an exception message or a log.

The key is made, encoded and decoded in ``bytearray`` buffers that are zeroed after
use, never in ``bytes`` (which Python cannot zero): random bytes are read straight into
the key's buffer, and the base64 codec below works byte by byte for that reason.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from keyplane.errors import ConflictError, RootKeyError
from keyplane.storage._files import create_private_file, fsync_dir, make_private_dir

ROOT_KEY_ENV: Final = "KEYPLANE_ROOT_KEY"
"""The environment variable that holds the root key as base64 of 32 bytes."""

ROOT_KEY_BYTES: Final = 32

# A key file holds 44 characters of base64 and a newline; anything much longer is
# not a key file, and reading it whole would be pointless.
_MAX_FILE_BYTES: Final = 256

_B64_ALPHABET: Final = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)
_B64_VALUE: Final = {c: v for v, c in enumerate(_B64_ALPHABET)}
_B64_PAD: Final = ord("=")
# What bytes.strip() strips: the whitespace around a key that is not part of it.
_WHITESPACE: Final = frozenset(b" \t\n\r\x0b\x0c")


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
        # The environment's copy is immutable already; this one need not outlive it.
        # Anything not ASCII becomes "?", which base64 refuses.
        text = bytearray(value.strip().encode("ascii", "replace"))
        try:
            return _decode(text, ROOT_KEY_ENV)
        finally:
            text[:] = bytes(len(text))
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


def _decode(text: bytearray, source: str) -> bytearray:
    """The key base64 ``text`` (surrounding whitespace ignored) holds.

    Raises:
        RootKeyError: ``text`` is empty, is not strict base64, or does not hold 32
            bytes. The message never quotes it.
    """
    start, end = 0, len(text)
    while start < end and text[start] in _WHITESPACE:
        start += 1
    while end > start and text[end - 1] in _WHITESPACE:
        end -= 1
    if start == end:
        raise RootKeyError(
            f"{source} is empty; it must hold the base64 of {ROOT_KEY_BYTES} bytes"
        )
    with memoryview(text) as view:
        raw = b64decode_into(view[start:end])
    if raw is None:
        raise RootKeyError(
            f"{source} is not valid base64; it must hold the base64 of"
            f" {ROOT_KEY_BYTES} bytes on one line"
        )
    if len(raw) != ROOT_KEY_BYTES:
        size = len(raw)
        raw[:] = bytes(size)
        raise RootKeyError(
            f"{source} holds {size} bytes; a root key is {ROOT_KEY_BYTES} bytes"
        )
    return raw


def random_key() -> bytearray:
    """A new random root key, read from the kernel's random source straight into the
    ``bytearray`` returned, for the caller to zero.

    Raises:
        OSError: The random source cannot be read.
    """
    key = bytearray(ROOT_KEY_BYTES)
    with open("/dev/urandom", "rb", buffering=0) as source, memoryview(key) as view:
        filled = 0
        while filled < len(key):
            n = source.readinto(view[filled:])
            if not n:
                raise OSError(0, "the random source ended")
            filled += n
    return key


def b64encode_into(data: bytearray) -> bytearray:
    """Standard base64 of ``data`` (with padding), in a new ``bytearray`` for the
    caller to zero: what ``base64.b64encode`` makes, with no ``bytes`` copy."""
    out = bytearray(4 * ((len(data) + 2) // 3))
    j = 0
    for i in range(0, len(data), 3):
        left = len(data) - i
        group = data[i] << 16
        if left > 1:
            group |= data[i + 1] << 8
        if left > 2:
            group |= data[i + 2]
        out[j] = _B64_ALPHABET[group >> 18 & 63]
        out[j + 1] = _B64_ALPHABET[group >> 12 & 63]
        out[j + 2] = _B64_ALPHABET[group >> 6 & 63] if left > 1 else _B64_PAD
        out[j + 3] = _B64_ALPHABET[group & 63] if left > 2 else _B64_PAD
        j += 4
    return out


def b64decode_into(text: bytearray | memoryview) -> bytearray | None:
    """The bytes standard base64 ``text`` holds, in a new ``bytearray`` for the
    caller to zero; None unless ``text`` is what ``base64.b64decode(text,
    validate=True)`` accepts (the alphabet, groups of four, padding only at the
    end), whose result it equals.

    None rather than an exception: the caller says what was wrong without quoting
    the text.
    """
    if len(text) % 4:
        return None
    padding = 0
    while padding < 2 and padding < len(text) and text[-1 - padding] == _B64_PAD:
        padding += 1
    body = len(text) - padding
    # Padding completes the last group, which must then hold at least one byte.
    if padding and body % 4 < 2:
        return None
    out = bytearray(body * 3 // 4)
    group, bits, j = 0, 0, 0
    for i in range(body):
        value = _B64_VALUE.get(text[i])
        if value is None:
            out[:] = bytes(len(out))
            return None
        group = (group << 6 | value) & 0xFFFFFF
        bits += 6
        if bits >= 8:
            bits -= 8
            out[j] = group >> bits & 0xFF
            j += 1
    return out


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
        text = buffer[:size]
        try:
            return _decode(text, f"the root key file {path}")
        finally:
            text[:] = bytes(len(text))
    finally:
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
    return _write_new_key(fd, path)


def _write_new_key(fd: int, path: Path) -> bytearray:
    """Write a fresh random key to the new file ``path`` open at ``fd`` (closed here),
    flushed to disk with its directory entry.

    Raises:
        RootKeyError: The file cannot be written; it is removed.
    """
    try:
        key = random_key()
    except OSError as exc:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise RootKeyError(f"cannot make a root key: {exc.strerror}") from exc
    line = b64encode_into(key)
    line.append(ord("\n"))
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


# --- rotation -------------------------------------------------------------------------
# A rotation stages the new key in its own file, commits the store's re-wrapped
# partitions, then renames the staged file over the key file. Until the rename, the
# key file still holds the key the store was (or, after the commit, had been) sealed
# under; after it, the new one. A start that finds a staged file tries both.


def staged_root_key_path(path: Path) -> Path:
    """Where a rotation stages the next root key for the key file ``path``."""
    return path.with_name(path.name + ".next")


def stage_root_key(path: Path) -> bytearray:
    """Create the next root key in ``staged_root_key_path(path)``: mode 0600, flushed
    to disk with its directory entry before this returns.

    Returns:
        The new key, in a ``bytearray`` the caller should zero when done with it.

    Raises:
        ConflictError: A staged key is there already (a rotation that did not finish:
            the next start settles it).
        RootKeyError: The file cannot be created or written (none is left behind).
    """
    staged = staged_root_key_path(path)
    try:
        fd = create_private_file(staged)
    except FileExistsError:
        raise ConflictError(
            f"{staged} is left from a root key rotation that did not finish; restart"
            " the server (or start it once) to finish or undo that rotation, then"
            " rotate again"
        ) from None
    except OSError as exc:
        raise RootKeyError(f"cannot create {staged}: {exc.strerror}") from exc
    return _write_new_key(fd, staged)


def load_staged_root_key(path: Path) -> bytearray | None:
    """The staged next root key of the key file ``path``, or None when there is none.

    Raises:
        RootKeyError: The staged file is unsafe, malformed or unreadable, as
            ``load_root_key`` judges a key file.
    """
    try:
        return _read_key_file(staged_root_key_path(path))
    except FileNotFoundError:
        return None


def promote_staged_root_key(path: Path) -> None:
    """Rename the staged root key over the key file ``path`` (atomically), durably.

    Raises:
        RootKeyError: The rename or the flush failed.
    """
    staged = staged_root_key_path(path)
    try:
        os.replace(staged, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise RootKeyError(f"cannot rename {staged} to {path}: {exc.strerror}") from exc


def discard_staged_root_key(path: Path) -> None:
    """Remove the staged root key of the key file ``path``, if any, durably.

    Raises:
        RootKeyError: The file cannot be removed.
    """
    staged = staged_root_key_path(path)
    try:
        staged.unlink(missing_ok=True)
        fsync_dir(path.parent)
    except OSError as exc:
        raise RootKeyError(f"cannot remove {staged}: {exc.strerror}") from exc


def lock_key_directory(directory: Path, *, create: bool = False) -> int | None:
    """Take the data directory's lock: an exclusive advisory lock (flock(2)) on the
    directory of the root key file, held by a server for as long as it runs and by an
    offline rotation for as long as it rotates. One holder at a time: two servers on
    one directory would each keep the root key they started with, and a rotation
    through one would leave the other sealing new partitions under the old key.

    Args:
        directory: The data directory.
        create: Create the directory (mode 0700) if it is missing.

    Returns:
        The descriptor that holds the lock (closing it releases the lock), or None
        when another process (or another descriptor of this one) holds it.

    Raises:
        RootKeyError: The directory cannot be created, opened or locked.
    """
    try:
        if create:
            make_private_dir(directory)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RootKeyError(f"cannot open {directory}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        raise RootKeyError(f"cannot lock {directory}: {exc.strerror}") from exc
    return fd
