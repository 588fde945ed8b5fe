"""occ.data.folder: a hostile ImageFolder tree is refused in one line (exit 2), never hangs.

Each case copies the ``folder_run`` ImageFolder (classes circle / square / triangle) into
``tmp_path``, plants one hostile entry and runs ``occ`` in-process under a SIGALRM hang
guard: a FIFO would block the first read forever and a symlink loop would make the walk
exponential, so without the fix these cases fail on the guard rather than hang the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from occ.cli import app
from occ.data.folder import ImageFileError, list_samples

CASE_SECONDS = 60


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang(f"ran past {CASE_SECONDS} s")


def invoke(args: list[str]) -> Any:
    """The CLI in-process; a hang (blocked open, runaway walk) ends as ``_Hang``."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        return CliRunner().invoke(app, args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def refused(result: Any, pattern: str) -> str:
    """Exit 2 with one stderr line matching ``pattern``; no traceback, not "unexpected"."""
    assert not isinstance(result.exception, _Hang), result.exception
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output and "unexpected" not in lines[0], lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def copy_data(folder_run: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder_run["data"], tmp_path / "d", symlinks=True))


def eval_args(folder_run: dict, root: Path) -> list[str]:
    return ["eval", str(folder_run["artifact"]), "--data", "imagefolder", "--root", str(root)]


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width x height``, with a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def truncated_png(path: Path) -> None:
    """A noisy 64 x 64 PNG (incompressible) cut in half: the header reads, the data ends."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- 1. special files: refused by type when the dataset is listed -----------------------

SPECIAL: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (os.mkfifo, r"is a FIFO \(named pipe\), not a regular image file"),
    "dev-zero-link": (lambda p: p.symlink_to("/dev/zero"), r"is a character device"),
    "dangling-link": (lambda p: p.symlink_to(p.parent / "gone.png"),
                      r"cannot read image file: file not found"),
}


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_special_file_in_imagefolder_is_refused(folder_run: dict, tmp_path: Path,
                                                split: str, kind: str) -> None:
    root = copy_data(folder_run, tmp_path)
    make, message = SPECIAL[kind]
    make(root / split / "circle" / "zz.png")
    refused(invoke(eval_args(folder_run, root)), rf"{split}/circle/zz\.png: {message}")


def test_train_refuses_fifo_in_its_folder(folder_run: dict, tmp_path: Path) -> None:
    root = copy_data(folder_run, tmp_path)
    os.mkfifo(root / "train" / "square" / "zz.png")
    out = tmp_path / "x.pt"
    refused(invoke(["train", "lenet5", "--data", "imagefolder", "--root", str(root),
                    "--image-size", "28", "--epochs", "1", "--out", str(out)]),
            r"train/square/zz\.png: is a FIFO")
    assert not out.exists()


# --- 2. symlink loops and the entry limit: the listing is bounded ---------------------------


def test_directory_symlink_loop_is_refused(folder_run: dict, tmp_path: Path) -> None:
    root = copy_data(folder_run, tmp_path)
    (root / "train" / "circle" / "l1").symlink_to("..")
    (root / "train" / "circle" / "l2").symlink_to("..")
    (root / "train" / "square" / "l3").symlink_to("../..")
    refused(invoke(eval_args(folder_run, root)),
            r"train/circle/l\d: leads to .*/train, a folder already listed \(a directory "
            r"symlink loop")


def test_link_to_the_class_folder_itself_is_refused(folder_run: dict, tmp_path: Path) -> None:
    root = copy_data(folder_run, tmp_path)
    (root / "test" / "triangle" / "self").symlink_to(".")
    refused(invoke(eval_args(folder_run, root)), r"test/triangle/self: leads to .*already listed")


def test_folder_entry_limit(folder_run: dict, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCC_MAX_FOLDER_ENTRIES", "10")
    refused(invoke(eval_args(folder_run, copy_data(folder_run, tmp_path))),
            r"/train: holds more files and folders than the limit 10 .*OCC_MAX_FOLDER_ENTRIES")


def test_listing_matches_torchvision(tmp_path: Path) -> None:
    """Same samples in the same order as torchvision's walk, symlinked folders included."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root = tmp_path / "train"
    for rel in ("b/2.png", "b/10.PNG", "b/sub/z/1.jpg", "b/sub/0.png", "b/notes.txt",
                "a/x.png", "a/a-sub/y.png", "elsewhere/q.png", "elsewhere/deep/r.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / "a" / "linked").symlink_to(root / "elsewhere")
    classes = {"a": 0, "b": 1}
    ours = list_samples(str(root), classes, IMG_EXTENSIONS, allow_empty=False)
    assert ours == make_dataset(str(root), classes, IMG_EXTENSIONS)
    assert len(ours) == 8


# --- 3. unreadable images: named, exit 2, also from DataLoader workers -------------------

BAD_IMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "random-bytes": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(500)),
                     r"not a readable image \(no image format PIL knows"),
    "truncated": (truncated_png, r"not a readable image \(OSError: image file is truncated"),
    "header-bomb": (lambda p: p.write_bytes(png_header_only(100_000, 100_000)),
                    r"not a readable image \(DecompressionBombError"),
    "svg-named-png": (lambda p: p.write_text("<svg></svg>"), r"not a readable image"),
}


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_unreadable_image_is_named(folder_run: dict, tmp_path: Path, kind: str) -> None:
    root = copy_data(folder_run, tmp_path)
    make, message = BAD_IMAGES[kind]
    make(root / "test" / "circle" / "zz.png")
    refused(invoke(eval_args(folder_run, root)), rf"test/circle/zz\.png: {message}")


def test_image_over_the_pixel_limit_is_refused_before_decoding(
        folder_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_data(folder_run, tmp_path)
    Image.new("RGB", (30, 20)).save(root / "test" / "square" / "zz.png")
    monkeypatch.setenv("OCC_MAX_IMAGE_PIXELS", "500")
    refused(invoke(eval_args(folder_run, root)),
            r"zz\.png: is 30 x 20 = 600 pixels, over the limit 500 .*OCC_MAX_IMAGE_PIXELS")


def test_unreadable_image_in_a_worker_process_stays_one_line(folder_run: dict,
                                                              tmp_path: Path) -> None:
    from occ.data import load_data
    from occ.recipe import DataSpec

    root = copy_data(folder_run, tmp_path)
    (root / "test" / "triangle" / "zz.png").write_bytes(b"\x89PNG garbage")
    bundle = load_data(DataSpec(dataset="imagefolder", root=str(root), val_size=6))
    with pytest.raises(ImageFileError) as info:
        for _ in bundle.loader("test", 8, num_workers=2):
            pass
    assert str(info.value) == (f"{root}/test/triangle/zz.png: not a readable image "
                               "(no image format PIL knows; corrupt or not an image)")


def test_unreadable_image_during_a_stage_is_bad_input(folder_run: dict,
                                                      tmp_path: Path) -> None:
    """The stage runner passes the data error through (exit 2), not "stage failed" (1)."""
    root = copy_data(folder_run, tmp_path)
    for cls in ("circle", "square", "triangle"):  # wherever the val slice falls
        (root / "train" / cls / "zz.png").write_bytes(b"not an image")
    doc = {"version": 1, "name": "bad", "seed": 0,
           "model": {"arch": "lenet5", "kwargs": {"width": 0.25},
                     "checkpoint": str(folder_run["checkpoint"])},
           "data": {"dataset": "imagefolder", "root": str(root), "batch_size": 16,
                    "val_size": 6, "num_workers": 2},
           "stages": [{"type": "prune", "method": "magnitude", "sparsity": 0.5, "epochs": 1}],
           "guard": {"enabled": False}, "output": str(tmp_path / "out")}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(doc))
    refused(invoke(["compress", str(recipe), "--no-guard"]),
            r"train/\w+/zz\.png: not a readable image")
    assert not (tmp_path / "out" / "model.occ").exists()


def test_worker_message_is_cut_back_to_its_line() -> None:
    """torch rebuilds a worker's exception from the formatted traceback; one line remains."""
    text = ("Caught ImageFileError in DataLoader worker process 0.\nOriginal Traceback "
            "(most recent call last):\n  File \"x.py\", line 1, in <module>\n"
            "occ.data.folder.ImageFileError: /d/a.png: not a readable image (x)\n")
    assert str(ImageFileError(text)) == "/d/a.png: not a readable image (x)"
    assert str(ImageFileError("Caught nothing", where="w")) == "w: Caught nothing"


# --- 4. empty class folders are named ----------------------------------------------------


@pytest.mark.parametrize("empty", [["zebra"], ["aardvark", "zebra"]])
def test_empty_class_folder_is_named(folder_run: dict, tmp_path: Path,
                                     empty: list[str]) -> None:
    root = copy_data(folder_run, tmp_path)
    for name in empty:
        (root / "train" / name).mkdir()
    (root / "train" / "zebra" / "readme.txt").write_text("not an image")
    line = refused(invoke(["train", "lenet5", "--data", "imagefolder", "--root", str(root),
                           "--epochs", "1", "--out", str(tmp_path / "x.pt")]),
                   r"/train: class folders? .* no images \(looked for .*\.png")
    assert ", ".join(empty) in line and "circle" not in line
    assert ("holds" in line) == (len(empty) == 1)
