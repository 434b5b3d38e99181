"""Atomic file writes, always-valid JSON, and the clean-up of what killed writers leave behind.

Every file mixlab writes for later reading (checkpoints, configs, ``eval.json``, manifests,
reports, policy files) goes through this module, so a reader only ever sees the old file or
the new one, never a half-written one:

1. the content goes to ``.<name>.tmp-<pid>`` in the target's own folder (same filesystem, so
   the rename below is atomic; the pid names the writer);
2. the file is flushed and ``fsync``-ed, so its bytes are on disk before anything points at it;
3. ``os.replace`` renames it over the target (atomic on POSIX: old or new, nothing between);
4. the folder is ``fsync``-ed, so the rename itself survives a power cut.

Folders that are built whole (a shard store, the demo corpus, an exported model) are written
into ``.<name>.tmp-<pid>`` and renamed the same way by :func:`atomic_folder`; an existing target
is first moved aside to ``.<name>.old-<pid>`` (a rename cannot replace a non-empty folder).

A writer killed mid-write (``kill -9``, out of memory) leaves its temporary behind.
:func:`remove_stale_temporaries` deletes those whose writer is gone: the pid in the name is
checked with ``os.kill(pid, 0)`` (no such process -> stale). A temporary of this very process
is kept while one of its writes is in progress and stale otherwise (in a container the pid of
a killed run is often the pid of the next one). Limitation: a writer on another machine
writing to a shared folder cannot be seen; clean-up is run where no such writer is expected
(run folders on start/resume, a store's parent before ``prepare``).

JSON has no NaN or infinity (``json.dumps`` writes bare ``NaN``, which strict parsers reject).
:func:`json_safe` turns every non-finite float - at any depth, numpy scalars included - into
``null`` and lists where it found them (``"eval/code/ppl"``, ``"runs[0].final.loss"``);
:func:`write_json` writes the result with ``allow_nan=False`` (a value the sanitiser missed is
an error, never an invalid file) and can record the list under a key of the object, e.g.
``"nonfinite": ["eval/code/ppl"]``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>[0-9]+)$")

# Temporaries this process is writing right now (absolute paths). A second writer of the same
# target in this process (another thread) waits, so the shared temp name is never written twice.
_active: set[str] = set()
_active_changed = threading.Condition()


def temp_path(target: str | Path, kind: Literal["tmp", "old"] = "tmp") -> Path:
    """``<folder>/.<name>.tmp-<pid>``: where this process writes ``target`` before the rename."""
    target = Path(target)
    return target.parent / f".{target.name}.{kind}-{os.getpid()}"


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[None]:
    key = os.path.abspath(path)
    with _active_changed:
        while key in _active:
            _active_changed.wait()
        _active.add(key)
    try:
        yield
    finally:
        with _active_changed:
            _active.discard(key)
            _active_changed.notify_all()


def fsync_folder(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened/fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (and platforms) do not fsync folders
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: Literal["wb", "w"] = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for writing (``"wb"``, or ``"w"`` for UTF-8 text); on a clean exit the
    file is fsynced and renamed over ``path``, on an exception the temporary is removed."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode {mode!r} is not 'wb' or 'w'")
    path = Path(path)
    tmp = temp_path(path)
    with _claimed(tmp):
        try:
            with open(tmp, mode, encoding="utf-8" if mode == "w" else None) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    fsync_folder(path.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (``dst`` is whole or absent, never truncated)."""
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)
    return Path(dst)


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def json_safe(value: Any) -> tuple[Any, list[str]]:
    """``(clean, nonfinite)``: ``value`` with NaN/inf -> None and numpy scalars/arrays -> Python.

    Tuples become lists (as ``json.dumps`` writes them). ``nonfinite`` lists the places of the
    replaced values: dict keys joined by ``.``, list positions as ``[i]`` (``""`` for a bare
    non-finite number).
    """
    found: list[str] = []
    return _clean(value, "", found), found


def _clean(value: Any, where: str, found: list[str]) -> Any:
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        found.append(where)
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v, f"{where}.{k}" if where else str(k), found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def dumps_json(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (``value``): always valid JSON, NaN/inf as null."""
    return json.dumps(json_safe(value)[0], allow_nan=False, **kwargs)


def write_json(
    path: str | Path,
    value: Any,
    *,
    indent: int | None = 2,
    nonfinite_key: str | None = None,
    **kwargs: Any,
) -> list[str]:
    """Write ``value`` as valid JSON (+ newline) atomically; returns the non-finite places.

    With ``nonfinite_key`` and a dict ``value`` holding NaN/inf, the list of their places is
    stored under that key (e.g. ``"nonfinite"``) so readers see the nulls were not real values.
    ``kwargs`` go to ``json.dumps`` (``sort_keys``, ``ensure_ascii``, ...).
    """
    clean, found = json_safe(value)
    if nonfinite_key is not None and found and isinstance(clean, dict):
        clean[nonfinite_key] = found
    write_text(path, json.dumps(clean, indent=indent, allow_nan=False, **kwargs) + "\n")
    return found


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty ``.<name>.tmp-<pid>`` folder next to ``target`` to fill; on a clean exit
    it replaces ``target`` (see :func:`replace_folder`), on an exception it is deleted."""
    target = Path(target)
    tmp = temp_path(target)
    with _claimed(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            yield tmp
            replace_folder(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(src: str | Path, target: str | Path) -> None:
    """Rename folder ``src`` to ``target``; an existing ``target`` is moved aside to
    ``.<name>.old-<pid>`` first, restored if the rename fails and deleted after."""
    src, target = Path(src), Path(target)
    if not target.exists():
        os.replace(src, target)
    else:
        old = temp_path(target, "old")
        with _claimed(old):
            os.replace(target, old)
            try:
                os.replace(src, target)
            except BaseException:
                os.replace(old, target)
                raise
            with contextlib.suppress(OSError):  # else removed by the next clean-up
                _remove(old)
    fsync_folder(target.parent)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (``os.kill(pid, 0)``; another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:  # larger than any pid
        return False
    return True


def temporary_owner(path: str | Path) -> tuple[str, int] | None:
    """``(target name, writer pid)`` of a ``.<name>.tmp-<pid>`` / ``.old-<pid>`` path."""
    match = _TEMPORARY.match(Path(path).name)
    return (match["name"], int(match["pid"])) if match else None


def in_use(path: str | Path) -> bool:
    """Whether the temporary ``path`` belongs to a write that may still be going on."""
    owner = temporary_owner(path)
    if owner is None:
        return False
    pid = owner[1]
    if pid == os.getpid():
        with _active_changed:
            return os.path.abspath(path) in _active
    return pid_alive(pid)


def remove_stale_temporaries(
    folder: str | Path, *, names: Iterable[str] | None = None
) -> list[Path]:
    """Delete the temporaries (files or folders) in ``folder`` whose writer is gone.

    ``names`` limits the clean-up to temporaries of those target names (for a folder that
    mixlab does not own, such as the parent of a shard store). Returns the removed paths, each
    logged.
    """
    folder = Path(folder)
    wanted = None if names is None else set(names)
    removed: list[Path] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:  # missing or unreadable: nothing to clean (clean-up is best effort)
        return removed
    for entry in entries:
        owner = temporary_owner(entry.name)
        if owner is None or (wanted is not None and owner[0] not in wanted):
            continue
        path = Path(entry.path)
        if in_use(path):
            continue
        try:
            _remove(path)
        except OSError as exc:  # e.g. a read-only folder: leave it, say so
            logger.warning("cannot remove %s, left by a writer that is gone: %s", path, exc)
            continue
        logger.info("removed %s, left by a writer that is gone (pid %d)", path, owner[1])
        removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
