"""The root key: from the environment, from a private file, or newly created."""

from __future__ import annotations

import base64
import errno
import os
import stat

import pytest

from keyplane.errors import RootKeyError
from keyplane.storage import ROOT_KEY_BYTES, ROOT_KEY_ENV, _root_key, load_root_key

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _key_file(path, text: str, mode: int = 0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


# --- environment -------------------------------------------------------------------


def test_from_the_environment_without_touching_the_file(tmp_path):
    path = tmp_path / "keys" / "root.key"

    key = load_root_key(path, create=True, environ={ROOT_KEY_ENV: KEY_B64})

    assert key == KEY
    assert isinstance(key, bytearray)
    assert not path.parent.exists()


def test_the_environment_wins_over_an_existing_file(tmp_path):
    other = base64.b64encode(b"\xff" * 32).decode()
    path = _key_file(tmp_path / "root.key", other + "\n")
    assert load_root_key(path, create=False, environ={ROOT_KEY_ENV: KEY_B64}) == KEY


def test_surrounding_whitespace_in_the_environment_is_ignored(tmp_path):
    environ = {ROOT_KEY_ENV: f"  {KEY_B64}\n"}
    assert load_root_key(tmp_path / "k", create=False, environ=environ) == KEY


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("!!!not base64!!!", "not valid base64", id="bad-alphabet"),
        pytest.param(KEY_B64[:-1], "not valid base64", id="bad-padding"),
        pytest.param(KEY_B64[:20] + " " + KEY_B64[20:], "not valid base64", id="gap"),
        pytest.param("ключ" * 11, "not valid base64", id="non-ascii"),
        pytest.param(base64.b64encode(KEY[:16]).decode(), "16 bytes", id="short"),
        pytest.param(base64.b64encode(KEY + b"!").decode(), "33 bytes", id="long"),
    ],
)
def test_a_malformed_environment_value_is_refused(tmp_path, value, problem):
    path = tmp_path / "root.key"
    with pytest.raises(RootKeyError, match=problem) as info:
        load_root_key(path, create=True, environ={ROOT_KEY_ENV: value})
    assert ROOT_KEY_ENV in str(info.value)
    if value.strip():
        assert value.strip() not in str(info.value)
    assert info.value.__cause__ is None
    assert not path.exists()  # no fallback to the file once the variable is set


# --- key file ----------------------------------------------------------------------


def test_from_a_private_file(tmp_path):
    path = _key_file(tmp_path / "root.key", KEY_B64 + "\n")
    assert load_root_key(path, create=False, environ={}) == KEY


def test_a_file_without_a_final_newline(tmp_path):
    path = _key_file(tmp_path / "root.key", KEY_B64)
    assert load_root_key(path, create=False, environ={}) == KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_a_file_open_to_group_or_others_is_refused(tmp_path, mode):
    path = _key_file(tmp_path / "root.key", KEY_B64 + "\n", mode)
    with pytest.raises(RootKeyError, match="open to group or others") as info:
        load_root_key(path, create=True, environ={})
    assert f"chmod 600 {path}" in str(info.value)
    assert f"{mode:04o}" in str(info.value)
    assert KEY_B64 not in str(info.value)


def test_an_owner_only_file_with_extra_owner_bits_is_accepted(tmp_path):
    path = _key_file(tmp_path / "root.key", KEY_B64 + "\n", 0o400)
    assert load_root_key(path, create=False, environ={}) == KEY


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_a_file_of_another_user_is_refused(tmp_path):
    path = _key_file(tmp_path / "root.key", KEY_B64 + "\n")
    os.chown(path, 4321, -1)
    with pytest.raises(RootKeyError, match="belongs to uid 4321") as info:
        load_root_key(path, create=False, environ={})
    assert "chown" in str(info.value)


def test_a_directory_is_refused(tmp_path):
    path = tmp_path / "root.key"
    path.mkdir(mode=0o700)
    with pytest.raises(RootKeyError, match="not a regular file"):
        load_root_key(path, create=True, environ={})


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "root.key"
    os.mkfifo(path, 0o600)
    with pytest.raises(RootKeyError, match="not a regular file"):
        load_root_key(path, create=False, environ={})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("\n", "empty", id="blank"),
        pytest.param("not base64 at all\n", "not valid base64", id="garbage"),
        pytest.param(KEY_B64 + "\n" + KEY_B64 + "\n", "not valid base64", id="2-lines"),
        pytest.param(base64.b64encode(KEY[:31]).decode(), "31 bytes", id="short"),
        pytest.param(base64.b64encode(KEY * 2).decode(), "64 bytes", id="long"),
        pytest.param("A" * 4096, "too long", id="huge"),
    ],
)
def test_a_malformed_file_is_refused(tmp_path, text, problem):
    path = _key_file(tmp_path / "root.key", text)
    with pytest.raises(RootKeyError, match=problem) as info:
        load_root_key(path, create=True, environ={})
    if text.strip():
        assert text.strip()[:40] not in str(info.value)
    assert path.read_text() == text  # never replaced


def test_missing_without_create(tmp_path):
    path = tmp_path / "root.key"
    with pytest.raises(RootKeyError, match="no root key") as info:
        load_root_key(path, create=False, environ={})
    assert ROOT_KEY_ENV in str(info.value)
    assert not path.exists()


# --- creation ----------------------------------------------------------------------


def test_created_when_missing(tmp_path):
    path = tmp_path / "state" / "keys" / "root.key"

    key = load_root_key(path, create=True, environ={})

    assert isinstance(key, bytearray)
    assert len(key) == ROOT_KEY_BYTES
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    text = path.read_text()
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert base64.b64decode(text.strip(), validate=True) == key
    assert load_root_key(path, create=True, environ={}) == key
    assert load_root_key(path, create=False, environ={}) == key


def test_two_creations_give_different_keys(tmp_path):
    one = load_root_key(tmp_path / "one.key", create=True, environ={})
    two = load_root_key(tmp_path / "two.key", create=True, environ={})
    assert one != two


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_created_private_whatever_the_umask(tmp_path, umask):
    path = tmp_path / "keys" / "root.key"
    old = os.umask(umask)
    try:
        key = load_root_key(path, create=True, environ={})
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert load_root_key(path, create=False, environ={}) == key


def test_a_path_through_a_file_is_a_root_key_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RootKeyError, match="root key file"):
        load_root_key(blocker / "root.key", create=True, environ={})


def test_a_failed_creation_leaves_no_file(tmp_path, monkeypatch):
    def disk_full(directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_root_key, "fsync_dir", disk_full)
    path = tmp_path / "root.key"
    with pytest.raises(RootKeyError, match="cannot write"):
        load_root_key(path, create=True, environ={})
    assert not path.exists()


def test_a_dangling_symlink_is_not_followed_to_create(tmp_path):
    target = tmp_path / "elsewhere" / "root.key"
    link = tmp_path / "root.key"
    link.symlink_to(target)
    with pytest.raises(RootKeyError, match="leads nowhere"):
        load_root_key(link, create=True, environ={})
    assert not target.exists()
