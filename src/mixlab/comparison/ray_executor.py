"""Run a suite's steps as Ray tasks: ``mixlab compare --executor ray`` (and ``mixlab search``).

Each stage or main run is one Ray task that asks for ``num_cpus`` = the run's threads
(``train.threads``, 1 when 0; ``OMP_NUM_THREADS`` is set to match) and ``num_gpus`` =
``gpus_per_run``. The task is a thin supervisor: it starts ``python -m mixlab train ...`` (the
same command the local executor runs) as its child on whichever node Ray picked, polls it,
and returns its exit code, wall-clock and peak RSS (``os.wait4`` around the child, on that
node). Everything else (skipping finished steps, resuming interrupted ones, ``suite.json``)
stays in the runner on the driver, which is why **run folders must be on a filesystem that
every node and the driver see at the same path** (NFS, Lustre, a mounted bucket; a single
machine trivially), with mixlab and its dependencies installed on every node. Relative paths
in configs are resolved in the driver's working directory, which must exist on the nodes too.

What happens when things go wrong:

* **a worker or node dies** (OOM kill, lost machine): Ray reruns the task up to
  ``max_retries`` times (``retry_exceptions=False``: a run that *fails* is not retried; its
  exit status is the answer). The rerun finds the checkpoint the lost attempt saved and passes
  ``--resume`` (:attr:`Launch.retry_checkpoint`), so it continues on any node. When a node
  dies its workers SIGKILL their children as they exit (Ray's
  ``kill_child_processes_on_worker_exit``): the rerun continues from the last periodic
  checkpoint (``train.checkpoint_every``), and the lost attempt's time is not in ``cost.json``.
* **the trainer outlives its worker**: a worker killed outright (SIGKILL, the OOM killer)
  cannot kill its children. The child is started with ``PR_SET_PDEATHSIG`` = SIGTERM (Linux)
  in a session of its own, so it saves a checkpoint and exits; and the task holds an exclusive
  ``flock`` on ``.executor.lock`` in the step's folder, inherited by the child, so a rerun
  waits until the previous attempt's trainer is gone instead of training next to it.
* **Ctrl-C / SIGTERM of the driver**: the runner calls :meth:`RayExecutor.interrupt`, which
  ``ray.cancel``\\ s every task (``force=False``): Ray raises KeyboardInterrupt in the task,
  which sends SIGTERM to its trainer (it checkpoints) and returns its exit, so the attempt's
  time is kept as for a local run. The task polls its child rather than blocking in
  ``waitpid``, where the interrupt would not be delivered.
* **the driver is killed** (SIGKILL): Ray ends the job's tasks; their trainers stop, at best
  with a checkpoint (SIGTERM), at worst from their last periodic one.

Cluster address (``address``): ``HOST:PORT`` of a cluster's head (what ``ray start --head``
prints), ``auto`` (a cluster started on this machine), ``ray://HOST:10001`` (Ray Client, needs
``ray[client]``); default the ``RAY_ADDRESS`` environment variable, else a private Ray instance
on this machine (its cores, like ``--jobs``: mostly for trying it out; Ray then turns on its
token authentication and writes ``~/.ray/auth_token``). A cluster with token authentication
(Ray 2.60 starts ``ray start --head`` with it when ``~/.ray/auth_token`` exists) needs
``RAY_AUTH_MODE=token`` and its token (``RAY_AUTH_TOKEN`` or that file) on the driver too.

A ``search`` stage's process (``mixlab search``: plan, swarm, fit) runs on the driver's
machine, as with the local executor, and is handed ``--executor ray`` and the cluster's
address, so its swarm's runs become tasks on the same cluster; the coordinator itself holds
no cluster CPU (a task that waited for its own subtasks could starve a small cluster).

Extra: ``pip install 'mixlab[ray]'`` (Ray alone, no dashboard; ``ray`` + ``msgpack`` +
``protobuf``, torch untouched).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from mixlab.comparison.executor import Exit, Launch, LocalExecutor, StepError, wait_with_usage
from mixlab.config import RunConfig
from mixlab.errors import ConfigError
from mixlab.train.run_folder import RunFolder

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often a task checks its child (and can receive a cancel)


def import_ray() -> ModuleType:
    """``ray``, or a ConfigError that names the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'mixlab[ray]' (on the driver and every node)"
        ) from exc
    return ray


class RayExecutor:
    """Each step is a Ray task on the cluster at ``address`` (see the module docstring)."""

    name = "ray"

    def __init__(
        self, address: str | None = None, *, gpus_per_run: float = 0.0, max_retries: int = 3
    ) -> None:
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.max_retries = max_retries
        self._local = LocalExecutor()  # search coordinators
        self._lock = threading.Lock()
        self._refs: set[Any] = set()
        self._stopping = False
        self._owned = False
        self._task: Any = None
        self._forward_address = ""

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> str:
        ray = import_ray()
        address = self.address or os.environ.get("RAY_ADDRESS") or "local"
        if not ray.is_initialized():
            _init(ray, address)
            self._owned = True
        if address.startswith("ray://"):
            self._forward_address = address  # the coordinator connects the same way
        else:
            self._forward_address = ray.get_runtime_context().gcs_address
        self._task = ray.remote(_task_body)
        total = ray.cluster_resources()
        cpus, gpus = int(total.get("CPU", 0)), int(total.get("GPU", 0))
        where = "a private Ray instance" if address == "local" else "Ray cluster"
        return f"{where} at {self._forward_address} ({cpus} CPUs, {gpus} GPUs)"

    def close(self) -> None:
        if self._owned:
            import_ray().shutdown()
            self._owned = False

    # ------------------------------------------------------------------ sizing
    def slots(self, jobs: int | None, n_jobs: int) -> int:
        """Every job in flight unless ``--jobs`` caps it: Ray queues tasks by their request."""
        return max(1, n_jobs if jobs is None else jobs)

    def threads(self, config: RunConfig, slots: int) -> int | None:
        return config.train.threads or 1

    # ------------------------------------------------------------------ running
    def forward_args(self) -> list[str]:
        """Options that make a nested ``mixlab search`` use this cluster the same way."""
        return [
            "--executor",
            "ray",
            "--ray-address",
            self._forward_address,
            "--gpus-per-run",
            str(self.gpus_per_run),
            "--ray-max-retries",
            str(self.max_retries),
        ]

    def run(self, launch: Launch) -> Exit:
        if launch.kind == "search":
            return self._local.run(replace(launch, args=(*launch.args, *self.forward_args())))
        ray = import_ray()
        with self._lock:
            if self._stopping:
                raise StepError("interrupted before it started")
            ref = self._task.options(
                num_cpus=launch.threads or 1,
                num_gpus=self.gpus_per_run,
                max_retries=self.max_retries,
                retry_exceptions=False,
                name=f"mixlab {launch.label}".strip(),
            ).remote(launch)
            self._refs.add(ref)
        try:
            result: Exit = ray.get(ref)
            return result
        except ray.exceptions.TaskCancelledError as exc:
            raise StepError("cancelled") from exc
        except ray.exceptions.RayTaskError as exc:  # the supervisor itself failed
            raise StepError(f"its Ray task failed: {exc.cause!r}") from exc
        except ray.exceptions.RayError as exc:  # worker or node lost, retries used up
            raise StepError(
                f"lost on the cluster after {self.max_retries} retries "
                f"({type(exc).__name__}); re-run to resume it from its checkpoint"
            ) from exc
        finally:
            with self._lock:
                self._refs.discard(ref)

    def interrupt(self, grace: float) -> None:
        """Cancel every task (its trainer checkpoints); local coordinators as locally."""
        ray = import_ray()
        with self._lock:
            self._stopping = True
            refs = list(self._refs)
        for ref in refs:
            ray.cancel(ref, force=False)
        self._local.interrupt(grace)


def _init(ray: ModuleType, address: str) -> None:
    """``ray.init`` without Ray's SIGTERM handler (ours turns SIGTERM into a checkpoint)."""
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs["include_dashboard"] = False
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"--ray-address {address}: cannot connect to a Ray cluster there "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); start one "
            "(ray start --head) or fix the address (RAY_ADDRESS)"
        ) from exc
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------- on the node
def _task_body(launch: Launch) -> Exit:
    """What a Ray task runs: :func:`run_supervised` on this node."""
    import ray

    return run_supervised(launch, where=ray.util.get_node_ip_address())


def run_supervised(launch: Launch, where: str | None = None, poll: float = POLL_SECONDS) -> Exit:
    """Run ``launch``'s process here as a supervised child; its :class:`Exit`.

    Takes the step folder's lock (waiting for an earlier attempt's trainer to exit), starts
    the child with ``PR_SET_PDEATHSIG`` and polls it. A KeyboardInterrupt (``ray.cancel``)
    sends the child SIGTERM and returns its exit once it has checkpointed.
    """
    if not launch.cwd.is_dir():
        raise StepError(
            f"the driver's working directory {launch.cwd} does not exist on node {where}: "
            "start mixlab from a folder on the shared filesystem (or use absolute paths)"
        )
    launch.dir.mkdir(parents=True, exist_ok=True)
    lock = _acquire(RunFolder(launch.dir).executor_lock, launch.log, poll)
    try:
        cmd = launch.command()
        env = dict(os.environ, **launch.env)
        with open(launch.log, "a", encoding="utf-8") as fh:
            fh.write(f"\n$ {' '.join(cmd)}" + (f"  [node {where}]" if where else "") + "\n")
            fh.flush()
            start = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=launch.cwd,
                pass_fds=(lock,),  # the lock lives as long as the trainer does
                start_new_session=True,  # out of the worker's group: a group kill is no SIGKILL
                preexec_fn=_die_with_parent(),  # ... and the worker's death is a SIGTERM
            )
            try:
                code, peak = wait_with_usage(proc, poll=poll)
            except KeyboardInterrupt:  # ray.cancel: checkpoint and report the exit
                code, peak = _stop(proc, poll)
            except BaseException:  # the worker itself is going down
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                raise
            return Exit(code, time.perf_counter() - start, peak, where)
    finally:
        os.close(lock)


def _stop(proc: subprocess.Popen[bytes], poll: float) -> tuple[int, float | None]:
    """SIGTERM (``mixlab train`` saves a checkpoint on it), then wait however long that takes."""
    proc.send_signal(signal.SIGTERM)
    while True:
        try:
            return wait_with_usage(proc, poll=poll)
        except KeyboardInterrupt:  # a second cancel: it is stopping already
            continue


def _acquire(path: Path, run_log: Path, poll: float) -> int:
    """An exclusive ``flock`` on ``path`` (a file descriptor), waiting while another holds it.

    The holder is an earlier attempt of the same step: its Ray worker died but its trainer,
    which inherited the lock, is still saving its checkpoint.
    """
    import fcntl  # POSIX only, like the rest of the task body

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    waiting = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if not waiting:
                    with open(run_log, "a", encoding="utf-8") as fh:
                        fh.write("(waiting for an earlier attempt's process to exit)\n")
                    waiting = True
                time.sleep(poll)
    except BaseException:
        os.close(fd)
        raise


def _die_with_parent() -> Any:
    """A ``preexec_fn``: the child gets SIGTERM when the thread that started it dies.

    ``prctl(PR_SET_PDEATHSIG)`` on Linux (resolved before the fork, so the child only makes
    the call); None elsewhere, where the trainer may outlive a killed worker.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return preexec
