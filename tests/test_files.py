"""mixlab.files: atomic writes, always-valid JSON, clean-up of dead writers' temporaries."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mixlab.files import (
    atomic_folder,
    atomic_open,
    copy_file,
    dumps_json,
    json_safe,
    pid_alive,
    remove_stale_temporaries,
    save_torch,
    temp_path,
    temporary_owner,
    write_bytes,
    write_json,
    write_text,
)
from tests.helpers import strict_loads


def test_writers_replace_the_target_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old", encoding="utf-8")
    write_text(target, "new é")
    assert target.read_text(encoding="utf-8") == "new é"
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    save_torch(tmp_path / "c.pt", {"w": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.arange(3))
    copy_file(tmp_path / "c.pt", tmp_path / "d.pt")
    assert (tmp_path / "d.pt").read_bytes() == (tmp_path / "c.pt").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin", "c.pt", "d.pt"]


def test_temp_name_holds_the_writer_pid(tmp_path: Path) -> None:
    tmp = temp_path(tmp_path / "checkpoint.pt")
    assert tmp == tmp_path / f".checkpoint.pt.tmp-{os.getpid()}"
    assert temporary_owner(tmp) == ("checkpoint.pt", os.getpid())
    assert temporary_owner(tmp_path / f".store.old-{os.getpid()}") == ("store", os.getpid())
    for name in ("checkpoint.pt", ".hidden", "x.tmp-12", ".x.tmp-12a", ".x.tmp-"):
        assert temporary_owner(name) is None


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "eval.json"
    target.write_text('{"ok": 1}', encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(target, "w") as fh:
        fh.write('{"half')
        assert temp_path(target).exists()
        raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == '{"ok": 1}'
    assert os.listdir(tmp_path) == ["eval.json"]
    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):  # type: ignore[arg-type]
        pass


def test_json_safe_nulls_every_non_finite_value_and_says_where() -> None:
    value = {
        "a": 1.5,
        "b": float("nan"),
        "nested": {"c": [1, float("inf"), {"d": -math.inf}], "e": (np.float32("nan"), 2)},
        "np": np.float64(0.25),
        "count": np.int64(7),
        "arr": np.array([1.0, np.nan]),
        "flag": True,
        "none": None,
    }
    clean, found = json_safe(value)
    assert clean == {
        "a": 1.5,
        "b": None,
        "nested": {"c": [1, None, {"d": None}], "e": [None, 2]},
        "np": 0.25,
        "count": 7,
        "arr": [1.0, None],
        "flag": True,
        "none": None,
    }
    assert type(clean["count"]) is int and type(clean["np"]) is float
    assert found == ["b", "nested.c[1]", "nested.c[2].d", "nested.e[0]", "arr[1]"]
    assert json_safe(float("nan")) == (None, [""])
    assert value["b"] != value["b"]  # the input is not modified
    assert strict_loads(dumps_json(value)) == clean


def test_write_json_is_always_valid_and_can_flag_non_finite_keys(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    record = {"step": 3, "eval/a/ppl": float("nan"), "eval/b/ppl": 2.0, "eval/mean_ppl": math.inf}
    found = write_json(path, record, nonfinite_key="nonfinite")
    assert found == ["eval/a/ppl", "eval/mean_ppl"]
    saved = strict_loads(path.read_text(encoding="utf-8"))
    assert saved == {
        "step": 3,
        "eval/a/ppl": None,
        "eval/b/ppl": 2.0,
        "eval/mean_ppl": None,
        "nonfinite": ["eval/a/ppl", "eval/mean_ppl"],
    }
    assert write_json(path, {"x": 1.0}, nonfinite_key="nonfinite") == []
    assert strict_loads(path.read_text(encoding="utf-8")) == {"x": 1.0}  # no flag when clean
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_a_value_the_sanitiser_cannot_see_fails_instead_of_writing_nan(tmp_path: Path) -> None:
    class Opaque:
        pass

    path = tmp_path / "x.json"
    with pytest.raises(ValueError, match="JSON compliant"):
        write_json(path, {"v": Opaque()}, default=lambda _: float("nan"))
    assert os.listdir(tmp_path) == []


def test_atomic_folder_replaces_a_folder_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "store"
    with atomic_folder(out) as tmp:
        assert tmp == temp_path(out) and tmp.is_dir()
        (tmp / "one").write_text("1")
    assert sorted(os.listdir(out)) == ["one"]
    with atomic_folder(out) as tmp:
        (tmp / "two").write_text("2")
    assert sorted(os.listdir(out)) == ["two"]
    assert os.listdir(tmp_path) == ["store"]  # no .tmp- nor .old- folder left
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "three").write_text("3")
        raise RuntimeError
    assert sorted(os.listdir(out)) == ["two"] and os.listdir(tmp_path) == ["store"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path, dead_pid: int) -> None:
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        stale_file = tmp_path / f".checkpoint.pt.tmp-{dead_pid}"
        stale_file.write_bytes(b"partial")
        stale_dir = tmp_path / f".store.tmp-{dead_pid}"
        (stale_dir / "domains").mkdir(parents=True)
        old_dir = tmp_path / f".store.old-{dead_pid}"
        old_dir.mkdir()
        busy = tmp_path / f".eval.json.tmp-{live.pid}"
        busy.write_text("being written")
        own_leftover = temp_path(tmp_path / "config.yaml")  # same pid, no write going on
        own_leftover.write_text("left by an earlier process with this pid")
        unrelated = ["checkpoint.pt", ".hidden", "notes.tmp-1", f".x.tmp-{dead_pid}a"]
        for name in unrelated:
            (tmp_path / name).write_text("keep")

        assert remove_stale_temporaries(tmp_path, names=["store"]) == [old_dir, stale_dir]
        assert stale_file.exists()
        removed = remove_stale_temporaries(tmp_path)
        assert sorted(removed) == sorted([stale_file, own_leftover])
        assert sorted(os.listdir(tmp_path)) == sorted([*unrelated, busy.name])
        assert remove_stale_temporaries(tmp_path / "missing") == []
    finally:
        live.communicate(b"")
    assert remove_stale_temporaries(tmp_path) == [busy]


def test_a_write_in_progress_in_this_process_is_not_removed(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    with atomic_open(target) as fh:
        fh.write(b"half")
        fh.flush()
        assert remove_stale_temporaries(tmp_path) == []
        assert temp_path(target).exists()
    assert target.read_bytes() == b"half"
    with atomic_folder(tmp_path / "store") as tmp:
        assert remove_stale_temporaries(tmp_path) == [] and tmp.is_dir()


def test_pid_alive(dead_pid: int) -> None:
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid)
    assert not pid_alive(0) and not pid_alive(-1) and not pid_alive(10**30)


def test_threads_writing_one_target_never_mix_their_bytes(tmp_path: Path) -> None:
    target = tmp_path / "suite.json"
    payloads = [{"writer": i, "data": [i] * 20_000} for i in range(6)]
    errors: list[BaseException] = []

    def write(payload: dict[str, Any]) -> None:
        try:
            for _ in range(5):
                write_json(target, payload)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert strict_loads(target.read_text(encoding="utf-8")) in payloads
    assert os.listdir(tmp_path) == ["suite.json"]
