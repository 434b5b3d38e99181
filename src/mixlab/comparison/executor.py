"""Where a suite's steps run: the executor seam of the suite runner.

The runner (:mod:`mixlab.comparison.runner`) decides *what* runs: which steps are finished
(``cost.json``, skipped), which resume from a checkpoint, what each costs (``suite.json``), what
happens on Ctrl-C. An executor decides only *where and how* one step's process runs: it gets a
:class:`Launch` (``mixlab`` arguments, extra environment, log file, CPU request), runs
``python -m mixlab <args>`` somewhere, waits for it and returns an :class:`Exit` (exit code,
wall-clock seconds, peak RSS measured with ``os.wait4`` around the process)::

    runner:   plan -> skip / resume -> Launch --executor.run()--> Exit -> cost.json, suite.json
    executor: LocalExecutor   a child process of this one (the default)
              RayExecutor     a Ray task on a cluster (mixlab.comparison.ray_executor)

An executor has four more duties: :meth:`~Executor.open` before the first step (connect; a
description for the suite's first line), :meth:`~Executor.slots` (how many jobs the runner
keeps in flight), :meth:`~Executor.threads` (threads per run, which is also a run's CPU
request) and :meth:`~Executor.interrupt` (Ctrl-C / SIGTERM: ask every running step to
checkpoint and stop). A step that could not run to an exit code (its node was lost, it was
cancelled before it started) raises :class:`StepError`.

Another backend (Slurm through submitit, say) is one more class with these methods: submit the
same command with its resources, wait for its exit, cancel on :meth:`~Executor.interrupt`;
resuming needs nothing from it, since a step's folder already knows how far it got.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mixlab.config import RunConfig
from mixlab.errors import ConfigError

EXECUTORS = ("local", "ray")


class StepError(Exception):
    """A step did not finish; the message says why (exit status, node lost, cancelled)."""


@dataclass(frozen=True)
class Launch:
    """One step's process, as the runner asks for it.

    ``args`` follow ``python -m <module>`` (``mixlab``); ``env`` is added to the environment
    of wherever the process runs (that machine's own environment, not this one's);
    ``threads`` is the number of threads the run uses (None: the machine's default), which
    cluster executors request as CPUs. ``dir`` is the step's folder, ``log`` its ``run.log``;
    ``cwd`` is where relative paths of the config (``data.store: shards``) are resolved.
    ``retry_checkpoint``: a checkpoint that did not exist when the step was planned; if it
    exists when the process starts, an earlier attempt of this same launch got that far (its
    node died), and ``--resume`` is added so the retry continues it.
    """

    args: tuple[str, ...]
    dir: Path
    log: Path
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)
    threads: int | None = None
    kind: str = "train"  # train | doremi | search
    label: str = ""
    module: str = "mixlab"
    retry_checkpoint: Path | None = None

    def command(self) -> list[str]:
        """The command line with this machine's Python (``--resume`` for a retry that can)."""
        args = list(self.args)
        if self.retry_checkpoint is not None and self.retry_checkpoint.exists():
            args.append("--resume")
        return [sys.executable, "-m", self.module, *args]


@dataclass(frozen=True)
class Exit:
    """How a step's process ended: exit code, wall-clock seconds, peak RSS (MB), where."""

    code: int
    seconds: float
    peak_rss_mb: float | None = None
    node: str | None = None


class Executor(Protocol):
    """Runs one step's process at a time per call; the runner calls :meth:`run` from threads."""

    name: str

    def open(self) -> str | None:
        """Prepare (connect to a cluster); returns a description for the suite's first line."""
        ...

    def close(self) -> None:
        """Release what :meth:`open` took (called once, after the last step)."""
        ...

    def slots(self, jobs: int | None, n_jobs: int) -> int:
        """How many of the suite's ``n_jobs`` jobs run side by side (``jobs``: --jobs)."""
        ...

    def threads(self, config: RunConfig, slots: int) -> int | None:
        """Threads of one run of ``config`` (None: leave the machine's default)."""
        ...

    def run(self, launch: Launch) -> Exit:
        """Run ``launch`` to its end; raises :class:`StepError` if it could not."""
        ...

    def interrupt(self, grace: float) -> None:
        """Ask every running step to checkpoint and stop (Ctrl-C / SIGTERM of the suite)."""
        ...


class LocalExecutor:
    """Each step is a child process of this one, ``jobs`` side by side.

    With ``jobs > 1`` each run gets ``cores // jobs`` threads (``OMP_NUM_THREADS``, for runs
    whose ``train.threads`` is 0): two single-thread runs give ~31% more total throughput
    than one two-thread run on a 2-core machine. Ctrl-C in a terminal reaches the runs
    directly (same process group); :meth:`interrupt` waits ``grace`` seconds for them to
    stop, then sends SIGTERM to the rest (``mixlab train`` checkpoints on either).
    """

    name = "local"

    def __init__(self) -> None:
        self._running: set[subprocess.Popen[bytes]] = set()

    def open(self) -> str | None:
        return None

    def close(self) -> None:
        pass

    def slots(self, jobs: int | None, n_jobs: int) -> int:
        return 1 if jobs is None else jobs

    def threads(self, config: RunConfig, slots: int) -> int | None:
        if slots == 1:
            return None
        return max(1, (os.cpu_count() or 1) // slots)

    def run(self, launch: Launch) -> Exit:
        cmd = launch.command()
        env = dict(os.environ, **launch.env)
        with open(launch.log, "a", encoding="utf-8") as fh:
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            self._running.add(proc)
            try:
                code, peak = wait_with_usage(proc)
            finally:
                self._running.discard(proc)
            return Exit(code, time.perf_counter() - start, peak)

    def interrupt(self, grace: float) -> None:
        """SIGTERM to runs still alive after ``grace`` seconds.

        Not SIGINT: a process started in the background by a non-interactive shell
        (``nohup``, ``&``) ignores SIGINT, and its runs inherit that.
        """
        deadline = time.monotonic() + grace
        while self._running and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in list(self._running):
            proc.send_signal(signal.SIGTERM)  # a no-op for a run that exited meanwhile


def wait_with_usage(
    proc: subprocess.Popen[bytes], poll: float | None = None
) -> tuple[int, float | None]:
    """Exit code and peak RSS (MB) of a child process, reaped with ``os.wait4``.

    ``poll`` (seconds) checks with ``WNOHANG`` in a loop instead of blocking: an exception
    raised asynchronously in this thread (Ray's ``ray.cancel``) is only delivered between
    bytecodes, never inside a blocking ``waitpid``.
    """
    if not hasattr(os, "wait4"):  # Windows
        return proc.wait(), None
    flags = 0 if poll is None else os.WNOHANG
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, flags)
        except InterruptedError:  # pragma: no cover - retried by Python already
            continue
        if pid:
            break
        time.sleep(poll or 0.0)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # the child is reaped: tell Popen so it does not wait again
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return code, usage.ru_maxrss / scale


def make_executor(
    name: str = "local",
    *,
    ray_address: str | None = None,
    gpus_per_run: float = 0.0,
    max_retries: int = 3,
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``) with its options.

    ``ray_address``: a Ray cluster (``HOST:PORT``, ``auto``, ``ray://HOST:10001``); default
    the ``RAY_ADDRESS`` environment variable, else a private Ray instance on this machine.
    ``gpus_per_run``: GPUs Ray reserves for each run. ``max_retries``: how often Ray reruns a
    step whose worker or node died (it resumes from its checkpoint).
    """
    if name not in EXECUTORS:
        raise ConfigError(f"--executor: {name!r} is not one of {', '.join(EXECUTORS)}")
    if gpus_per_run < 0:
        raise ConfigError(f"--gpus-per-run: must be >= 0, got {gpus_per_run}")
    if max_retries < 0:
        raise ConfigError(f"--ray-max-retries: must be >= 0, got {max_retries}")
    if name == "local":
        given = [
            flag
            for flag, value in (
                ("--ray-address", ray_address is not None),
                ("--gpus-per-run", gpus_per_run != 0.0),
                ("--ray-max-retries", max_retries != 3),
            )
            if value
        ]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --executor ray")
        return LocalExecutor()
    from mixlab.comparison.ray_executor import RayExecutor

    return RayExecutor(ray_address, gpus_per_run=gpus_per_run, max_retries=max_retries)
