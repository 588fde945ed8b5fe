"""Atomic output: every file occ writes goes through occ.io, which never replaces a FIFO,
socket or device node and leaves no temp file behind when it refuses."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from occ.errors import RecipeError
from occ.io import atomic_write_bytes, atomic_write_files, atomic_write_text


def test_atomic_write_replaces_a_file_and_makes_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _device_link(path: Path) -> None:
    path.symlink_to("/dev/null")


@pytest.mark.parametrize(("make", "kind"), [(_fifo, r"a FIFO \(named pipe\)"),
                                            (_socket, "a socket"),
                                            (_device_link, "a character device")],
                         ids=["fifo", "socket", "device-link"])
def test_special_files_are_refused_and_left_as_they_were(tmp_path: Path, make,
                                                          kind: str) -> None:
    target = tmp_path / "out.bin"
    make(target)
    before = os.stat(target).st_mode
    with pytest.raises(RecipeError, match=rf"--out: .*out\.bin is {kind}, not a file occ may "
                                          "replace"):
        atomic_write_bytes(target, b"data", where="--out")
    assert os.stat(target).st_mode == before and not stat.S_ISREG(before)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file left


def test_several_files_are_all_checked_before_the_first_is_written(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("old")
    os.mkfifo(tmp_path / "b.html")
    with pytest.raises(RecipeError, match=r"b\.html is a FIFO"):
        atomic_write_files({tmp_path / "a.md": "new", tmp_path / "b.html": b"<p>"})
    assert (tmp_path / "a.md").read_text() == "old"
