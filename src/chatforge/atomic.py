"""Files written so that a crash never leaves half of one where a reader would look.

Every checkpoint, model cache entry and run file chatforge writes goes through here: build it aside, flush it to
disk, rename it into place (a rename within one directory is atomic on POSIX).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if path.is_dir() and os.name != "posix":
            continue  # only POSIX can fsync a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_dir_atomically(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create directory ``target`` by calling ``fill(tmp)`` on a sibling temporary directory, flushing it to disk
    and renaming it into place. A crash at any point leaves either no ``target`` or a complete one (plus a
    ``.*.tmp-*`` leftover that ``remove_leftovers`` clears). An existing ``target`` is replaced."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        fill(tmp)
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def remove_leftovers(directory: Path) -> None:
    """Delete the temporary directories of writes that a killed process never finished."""
    if directory.is_dir():
        for entry in directory.iterdir():
            if (
                entry.is_dir()
                and entry.name.startswith(".")
                and (".tmp-" in entry.name or ".old-" in entry.name)
            ):
                shutil.rmtree(entry, ignore_errors=True)


def write_text_atomically(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
