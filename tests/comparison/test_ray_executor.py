"""The Ray executor: its task body here, and suites on a real local Ray cluster.

The task body (:func:`run_supervised`) needs no Ray: lock, PDEATHSIG and the cancel path are
checked on this machine with a tiny module of the test's own (default run). The slow tests start
a Ray cluster of their own (head without CPUs + two one-CPU worker nodes, each a
``ray start --block`` child of the test on its own loopback address, so nothing listens on
other interfaces) and stop exactly those processes at the end: never ``ray stop``, which kills
every Ray process on the machine.
"""

from __future__ import annotations

import _thread
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixlab.comparison import parse_suite, run_suite
from mixlab.comparison.executor import Exit
from mixlab.comparison.ray_executor import RayExecutor, run_supervised
from mixlab.comparison.runner import MANIFEST_NAME
from mixlab.train.callbacks import read_metrics
from mixlab.train.run_folder import RunFolder
from tests.comparison.test_executor import fake_launch, wait_for


# ---------------------------------------------------------------------------- the task body
def test_task_body_runs_the_child_in_the_drivers_folder(tmp_path: Path) -> None:
    launch = fake_launch(tmp_path, mb=32)
    done = run_supervised(launch, where="node-x")
    assert done.code == 0 and done.node == "node-x"
    assert done.peak_rss_mb is not None and done.peak_rss_mb > 32
    log = launch.log.read_text()
    assert "[node node-x]" in log and f"started in {tmp_path}" in log


def test_a_cancel_makes_the_child_checkpoint_and_reports_its_exit(tmp_path: Path) -> None:
    """ray.cancel raises KeyboardInterrupt in the task's thread; here: interrupt_main."""
    launch = fake_launch(tmp_path, mb=1, sleep=120)

    def cancel_once_started() -> None:
        wait_for(launch.dir / "started")
        _thread.interrupt_main()

    threading.Thread(target=cancel_once_started, daemon=True).start()
    done = run_supervised(launch, where="n", poll=0.05)
    assert done.code == 7  # the child's SIGTERM handler ran (it would checkpoint)
    assert (launch.dir / "checkpointed").exists()


def test_the_child_gets_sigterm_when_its_worker_is_killed(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed supervisor does not leave its trainer running."""
    launch = fake_launch(tmp_path, mb=1, sleep=120)
    script = (
        "import pickle, sys\n"
        "from mixlab.comparison.ray_executor import run_supervised\n"
        "run_supervised(pickle.loads(sys.stdin.buffer.read()))\n"
    )
    import pickle

    worker = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE)
    assert worker.stdin is not None
    worker.stdin.write(pickle.dumps(launch))
    worker.stdin.close()
    try:
        wait_for(launch.dir / "started")
        worker.kill()
        worker.wait(timeout=60)
        wait_for(launch.dir / "checkpointed")  # the orphan got SIGTERM and stopped
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_second_attempt_waits_for_the_first_ones_process(tmp_path: Path) -> None:
    launch = fake_launch(tmp_path, mb=1)
    lock_path = RunFolder(launch.dir).executor_lock
    held = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # an earlier attempt's trainer, still alive
    result: list[Exit] = []
    attempt = threading.Thread(target=lambda: result.append(run_supervised(launch, poll=0.05)))
    attempt.start()
    try:
        deadline = time.monotonic() + 60
        while "waiting for an earlier attempt" not in _text(launch.log):
            assert time.monotonic() < deadline, "the second attempt never waited"
            time.sleep(0.05)
        assert not (launch.dir / "started").exists()
    finally:
        os.close(held)
    attempt.join(timeout=60)
    assert result and result[0].code == 0 and (launch.dir / "started").exists()


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


# ---------------------------------------------------------------------------- a local cluster
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalRayCluster:
    """A Ray cluster of our own on loopback: a head with no CPUs, one-CPU worker nodes.

    Ray keeps 127.0.0.2.. as given (it rewrites 127.0.0.1 to the external address). Each node
    is a ``ray start --block`` child of this process; :meth:`stop` ends only those.
    """

    def __init__(self, root: Path, workers: int = 2) -> None:
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.n_workers = workers
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}  # node ip -> its `ray start`
        self.next_ip = 3
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, ip: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block"]
        cmd += ["--disable-usage-stats", "--include-log-monitor=false", f"--node-ip-address={ip}"]
        cmd += ["--object-store-memory=80000000", f"--dashboard-agent-listen-port={free_port()}"]
        log = open(self.root / f"node-{ip}.log", "wb")  # noqa: SIM115 - closed with the node
        self.nodes[ip] = subprocess.Popen(
            [*cmd, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()

    def start(self) -> None:
        self._start(
            "127.0.0.2",
            "--head",
            f"--port={self.port}",
            "--num-cpus=0",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",
            f"--temp-dir={self.root / 'ray'}",
        )
        deadline = time.monotonic() + 180
        while True:  # workers that start before the head listens may give up
            try:
                socket.create_connection(("127.0.0.2", self.port), timeout=1).close()
                break
            except OSError:
                head = self.nodes["127.0.0.2"]
                assert head.poll() is None, self.log("127.0.0.2")
                assert time.monotonic() < deadline, "the Ray head never listened"
                time.sleep(0.2)
        self.revive()

    def workers(self) -> dict[str, subprocess.Popen[bytes]]:
        return {ip: p for ip, p in self.nodes.items() if ip != "127.0.0.2"}

    def revive(self) -> None:
        """Start worker nodes, one at a time, until ``n_workers`` have joined.

        One at a time, and again when one gives up: on a busy machine a node's agents can
        take longer to start than ``ray start`` waits for its raylet to register (30 s).
        """
        import ray

        previous = signal.getsignal(signal.SIGTERM)
        ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        try:
            while len([p for p in self.workers().values() if p.poll() is None]) < self.n_workers:
                for _ in range(3):
                    ip = f"127.0.0.{self.next_ip}"
                    self.next_ip += 1
                    self._start(ip, f"--address={self.address}", "--num-cpus=1")
                    if self._joined(ray, ip):
                        break
                else:
                    raise AssertionError("a Ray worker node never joined\n" + self.tails())
        finally:
            ray.shutdown()
            signal.signal(signal.SIGTERM, previous)

    def _joined(self, ray: Any, ip: str) -> bool:
        """Wait until node ``ip`` is alive in the cluster (True) or its ``ray start`` exited."""
        deadline = time.monotonic() + 180
        while self.nodes[ip].poll() is None:
            if any(n["Alive"] and n["NodeManagerAddress"] == ip for n in ray.nodes()):
                return True
            assert time.monotonic() < deadline, f"node {ip} never joined\n" + self.tails()
            time.sleep(0.2)
        return False

    def log(self, ip: str) -> str:
        return (self.root / f"node-{ip}.log").read_text(errors="replace")

    def tails(self, lines: int = 12) -> str:
        """The end of every node's output and of its raylet's log (why a node did not join)."""
        out = []
        for ip, node in self.nodes.items():
            out.append(f"--- node {ip} (exit {node.poll()}):")
            out += self.log(ip).splitlines()[-lines:]
        for raylet_log in sorted((self.root / "ray").glob("session_*/logs/raylet*.out")):
            out.append(f"--- {raylet_log.name}:")
            out += raylet_log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def kill_node_of(self, pid: int) -> str:
        """SIGKILL the raylet of the worker node that runs process ``pid``; its ip."""
        chain = [pid]
        while chain[-1] > 1:
            chain.append(_ppid(chain[-1]))
            for ip, node in self.workers().items():
                if chain[-1] == node.pid:
                    raylet = chain[-2]
                    assert "raylet" in _cmdline(raylet), _cmdline(raylet)
                    os.kill(raylet, signal.SIGKILL)
                    return ip
        raise AssertionError(f"process {pid} does not run on a worker node of ours")

    def stop(self) -> None:
        """SIGTERM to our nodes; then SIGKILL to what they left behind (agents may linger)."""
        ours = {pid: _cmdline(pid) for pid in _descendants({n.pid for n in self.nodes.values()})}
        for node in reversed(list(self.nodes.values())):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        for pid, cmdline in ours.items():
            try:
                if _cmdline(pid) == cmdline:  # still that process, not a reused pid
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                continue


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _descendants(roots: set[int]) -> set[int]:
    """Every living process below ``roots`` (by /proc's parent pids)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = _ppid(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode(errors="replace")


def trainer_pid(run_dir: Path) -> int | None:
    """The pid of the ``mixlab train`` process training into ``run_dir``, if one is."""
    needle = f"-m mixlab train --config {run_dir}/"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in _cmdline(int(entry)):
                    return int(entry)
            except OSError:
                continue
    return None


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalRayCluster]:
    pytest.importorskip("ray")
    if not sys.platform.startswith("linux"):
        pytest.skip("the cluster fixture uses loopback aliases and /proc (Linux)")
    root = Path(tempfile.mkdtemp(prefix="mlray", dir="/tmp"))  # short: Ray's socket paths
    cluster = LocalRayCluster(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # the drivers' side (the nodes have it too)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.delenv("RAY_ADDRESS", raising=False)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- suites on it
STEPS = 240  # ~10 s per run here: long enough to kill a node in the middle


def cluster_suite(store: Path, **train: Any) -> dict:
    return {
        "name": "ray",
        "base": {
            "data": {"store": str(store), "seq_len": 32},
            "model": {"preset": "llama-tiny"},
            "train": {
                "max_steps": STEPS,
                "batch_size": 8,
                "warmup_steps": 1,
                "eval_every": STEPS // 2,
                "log_every": 10,
                "checkpoint_every": 10,
                "threads": 1,
                "progress": False,
                **train,
            },
            "eval": {"max_tokens_per_domain": 1000},
        },
        "include_baselines": False,
        "runs": [
            {"name": "uniform", "set": {"mixing.name": "uniform"}},
            {"name": "natural", "set": {"mixing.name": "natural"}},
        ],
    }  # two jobs, one per worker node


def results(run_dir: Path) -> dict[str, Any]:
    """What must not depend on where a run ran: its training losses and its final eval."""
    losses = {r["step"]: r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r}
    evals = json.loads(RunFolder(run_dir).eval.read_text())
    return {"loss": losses, "eval": {k: v for k, v in evals.items() if k.startswith("eval/")}}


def assert_same_results(got: Path, want: Path) -> None:
    a, b = results(got), results(want)
    assert sorted(a["loss"]) == sorted(b["loss"]) and sorted(a["eval"]) == sorted(b["eval"])
    for step, loss in b["loss"].items():
        assert a["loss"][step] == pytest.approx(loss, rel=1e-6, abs=1e-7), step
    for key, value in b["eval"].items():
        assert a["eval"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory, tiny_store: Path) -> Path:
    """The same suite through the local executor (two runs side by side)."""
    out = tmp_path_factory.mktemp("local") / "suite"
    run_suite(parse_suite(cluster_suite(tiny_store)), out, jobs=2, echo=lambda _: None)
    return out


@pytest.mark.slow
def test_suite_on_ray_matches_the_local_executor(
    ray_cluster: LocalRayCluster, local_reference: Path, tiny_store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "suite"
    lines: list[str] = []
    suite = parse_suite(cluster_suite(tiny_store))
    run_suite(suite, out, executor=RayExecutor(ray_cluster.address), echo=lines.append)
    assert f"on Ray cluster at {ray_cluster.address} (2 CPUs, 0 GPUs)" in lines[0]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert [r["status"] for r in manifest["runs"]] == ["done", "done"]
    nodes = set()
    for run in manifest["runs"]:
        assert run["tokens"] == STEPS * 8 * 32
        assert run["seconds"] > 0 and run["peak_rss_mb"] > 50  # measured on the node
        assert_same_results(out / run["dir"], local_reference / run["dir"])
        log = (out / run["dir"] / "run.log").read_text()
        nodes.add(log.split("[node ", 1)[1].split("]", 1)[0])
    assert nodes <= set(ray_cluster.workers())
    assert any("done in" in line and " on 127.0.0." in line for line in lines)
    # a second run reuses both folders without a task
    again: list[str] = []
    run_suite(suite, out, executor=RayExecutor(ray_cluster.address), echo=again.append)
    assert sum("finished before" in line for line in again) == 2


@pytest.mark.slow
def test_a_killed_node_costs_a_retry_that_resumes(
    ray_cluster: LocalRayCluster, local_reference: Path, tiny_store: Path, tmp_path: Path
) -> None:
    ray_cluster.revive()
    out = tmp_path / "suite"
    run_dir = out / "uniform" / "seed0"
    checkpoint = RunFolder(run_dir).checkpoint
    suite = parse_suite(cluster_suite(tiny_store))
    lines: list[str] = []
    done = threading.Event()
    failure: list[BaseException] = []

    def drive() -> None:
        try:
            run_suite(suite, out, executor=RayExecutor(ray_cluster.address), echo=lines.append)
        except BaseException as exc:  # shown by the assertion below
            failure.append(exc)
        finally:
            done.set()

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        wait_for(checkpoint, timeout=180)
        pid = trainer_pid(run_dir)
        assert pid is not None and not done.is_set(), "the run ended before the kill"
        killed = ray_cluster.kill_node_of(pid)
    finally:
        driver.join(timeout=600)
    assert not failure, failure
    log = (run_dir / "run.log").read_text()
    attempts = [line for line in log.splitlines() if line.startswith("$ ")]
    assert len(attempts) == 2, log
    assert f"[node {killed}]" in attempts[0] and "--resume" not in attempts[0]
    assert "--resume" in attempts[1] and f"[node {killed}]" not in attempts[1]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert [r["status"] for r in manifest["runs"]] == ["done", "done"]
    assert all(r["seconds"] > 0 and r["peak_rss_mb"] > 50 for r in manifest["runs"])
    for run in manifest["runs"]:
        assert_same_results(out / run["dir"], local_reference / run["dir"])


@pytest.mark.slow
def test_sigterm_of_compare_on_ray_checkpoints_and_resumes(
    ray_cluster: LocalRayCluster, tiny_store: Path, tmp_path: Path
) -> None:
    ray_cluster.revive()
    raw = cluster_suite(tiny_store)
    raw["include_baselines"] = False
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mixlab", "compare", str(suite_file), "--out", str(out)]
    cmd += ["--no-report", "--executor", "ray", "--ray-address", ray_cluster.address]
    run_dir = out / "uniform" / "seed0"
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        wait_for(RunFolder(run_dir).checkpoint, timeout=180)
        os.kill(proc.pid, signal.SIGTERM)  # the driver alone: it must cancel its task
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    folder = RunFolder(run_dir)
    assert not folder.cost.exists(), "the run finished before the interrupt"
    assert "interrupted at step" in folder.run_log.read_text()  # SIGTERM: it checkpointed
    partial = json.loads(folder.partial_cost.read_text())  # the task reported its exit
    assert partial["seconds"] > 0 and partial["peak_rss_mb"] > 50
    assert json.loads((out / MANIFEST_NAME).read_text())["runs"][0]["status"] == "pending"
    assert trainer_pid(run_dir) is None  # no trainer left behind on the cluster
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    steps = [r["step"] for r in read_metrics(run_dir) if "train/loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
    assert "--resume" in (run_dir / "run.log").read_text()
    cost = json.loads(folder.cost.read_text())
    assert cost["seconds"] > partial["seconds"]


@pytest.mark.slow
def test_search_stage_on_ray_runs_its_swarm_as_tasks(
    ray_cluster: LocalRayCluster, tiny_store: Path, tmp_path: Path
) -> None:
    """The search's coordinator runs here; its proxies and the main run are Ray tasks."""
    ray_cluster.revive()
    raw = cluster_suite(tiny_store, max_steps=4, eval_every=0, checkpoint_every=2)
    raw["include_baselines"] = False
    raw["baseline"] = "search"
    raw["runs"] = [
        {
            "name": "search",
            "stages": [
                {
                    "name": "swarm",
                    "kind": "search",
                    "search": {
                        "target": {"max_steps": 16},
                        "swarm": {"runs": 2, "corners": False, "prior": "uniform"},
                        "fit": {"bootstrap": 0},
                        "allow_unrecommended": True,
                    },
                }
            ],
            "set": {
                "mixing.name": "fixed",
                "mixing.weights_file": "{stage:swarm}/search_weights.json",
            },
        }
    ]
    out = tmp_path / "suite"
    executor = RayExecutor(ray_cluster.address)
    manifest = json.loads(
        run_suite(parse_suite(raw), out, executor=executor, echo=lambda _: None).read_text()
    )
    (run,) = manifest["runs"]
    (stage,) = run["stages"]
    assert run["status"] == "done" and stage["tokens"] == 3 * 4 * 8 * 32
    coordinator = (out / stage["dir"] / "run.log").read_text()
    assert f"--executor ray --ray-address {ray_cluster.address}" in coordinator
    assert "[node" not in coordinator.splitlines()[1]  # it ran here, not as a task
    swarm = out / stage["dir"] / "swarm"
    proxies = json.loads((swarm / MANIFEST_NAME).read_text())["runs"]
    assert len(proxies) == 3 and all(r["status"] == "done" for r in proxies)
    for proxy in proxies:
        assert "[node 127.0.0." in (swarm / proxy["dir"] / "run.log").read_text()
    assert "[node 127.0.0." in (out / run["dir"] / "run.log").read_text()
