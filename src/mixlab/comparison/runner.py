"""Run a suite: every (method, seed) job, its stages then its main run, resumably.

Each stage and main run is its own ``mixlab train`` (or ``mixlab doremi`` / ``mixlab search``)
process. That keeps runs isolated (a crash or an out-of-memory kill costs one run, not the
suite), lets ``jobs > 1`` run them side by side (two single-thread runs give ~31% more total
throughput than one two-thread run on a 2-core machine), and gives each run its own wall-clock
and peak RSS (``os.wait4``), which the report puts next to each result as its cost. The same
runner trains the proxy swarm of ``mixlab search`` (:mod:`mixlab.search.run` hands it a suite
built in code: one method per mixture).

Where a process runs is the executor's business (:mod:`mixlab.comparison.executor`): a child
process of this one by default, a Ray task on a cluster with ``executor=RayExecutor(...)``
(:mod:`mixlab.comparison.ray_executor`). Skipping, resuming, costs and Ctrl-C are decided
here, the same for every executor.

Folders, under the suite's output folder::

    suite.json                      manifest: methods, seeds, status and cost of every run
                                    (runs of earlier compares into the folder are kept)
    <method>/seed<k>/               the main run (a normal run folder: mixlab eval works on it)
    <method>/seed<k>/stages/<name>/ its stages (DoReMi reference + proxy, AC-ODM proxy, a
                                    search's swarm: itself a suite folder, see mixlab.search.run)

Each folder also gets ``planned_config.yaml`` (the config the suite asked for), ``run.log``
(the process's output) and, once it finished, ``cost.json``. Re-running the same suite skips
finished folders and continues interrupted ones from their checkpoint (``--resume``), so an
interrupted suite resumes. A folder whose planned config differs from the suite's is an error
(delete that folder, or pass ``fresh=True`` to redo everything).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixlab.comparison.executor import Executor, Launch, LocalExecutor, StepError
from mixlab.comparison.suite import Job, Step, Suite, run_tokens
from mixlab.config import RunConfig, read_yaml_mapping, resolved
from mixlab.errors import ConfigError, MixlabError
from mixlab.files import remove_stale_temporaries, write_json, write_text
from mixlab.interrupt import terminate_as_interrupt
from mixlab.train.run_folder import Action, RunFolder, next_action

log = logging.getLogger(__name__)

MANIFEST_NAME = "suite.json"
MANIFEST_VERSION = 1


class SuiteFailed(MixlabError):
    """Some runs of a suite failed; the others finished and are in the manifest."""


@dataclass
class StepCost:
    """What one stage or main run cost: wall-clock, tokens trained, peak RSS."""

    seconds: float = 0.0
    tokens: int = 0
    peak_rss_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "tokens": self.tokens, "peak_rss_mb": self.peak_rss_mb}


@dataclass
class JobState:
    job: Job
    status: str = "pending"  # pending | running | done | failed
    costs: dict[str, StepCost] = field(default_factory=dict)
    error: str | None = None


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    jobs: int | None = None,
    fresh: bool = False,
    echo: Callable[[str], None] = print,
    executor: Executor | None = None,
) -> Path:
    """Run (or resume) every job of ``suite`` into ``out``; returns the manifest path.

    ``jobs``: jobs side by side (default: 1 locally, all of them on a cluster, whose
    scheduler queues them). ``executor``: where each process runs (default
    :class:`~mixlab.comparison.executor.LocalExecutor`). Raises :class:`SuiteFailed` after
    all other jobs finished when some job failed (its ``run.log`` has the reason); the
    manifest is written either way.
    """
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, got {jobs}")
    executor = executor if executor is not None else LocalExecutor()
    root = Path(out).resolve()
    plan = suite.plan(root, overrides=overrides)
    if fresh:
        for job in plan:
            if job.dir.exists():
                shutil.rmtree(job.dir)
    for job in plan:
        for step in job.steps:
            _action(step)  # a folder made with other settings fails the suite before it starts
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)
    states = [JobState(j) for j in plan]
    for state in states:  # finished before: "done" in the manifest from the start
        costs = {step.name: _read_cost(step.folder) for step in state.job.steps}
        if all(cost is not None for cost in costs.values()):
            state.status = "done"
            state.costs = {name: cost for name, cost in costs.items() if cost is not None}
    lock = threading.Lock()
    print_lock = threading.Lock()
    stop = threading.Event()
    slots = executor.slots(jobs, len(plan))
    t0 = time.perf_counter()
    counter = {"started": 0}
    n_steps = sum(len(j.steps) for j in plan)

    def say(text: str) -> None:
        with print_lock:  # one whole line per message, whichever thread prints
            echo(text)

    earlier = _earlier_runs(root, {(j.method, j.seed) for j in plan})  # read once
    shared = _SharedSteps(plan)

    def write_manifest() -> None:
        _write_manifest(root, suite, states, earlier)

    def run_job(state: JobState) -> None:
        try:
            for step in state.job.steps:
                with shared.hold(step):  # a shared stage: one job runs it, the others wait
                    if not run_step(state, step):
                        return
        finally:
            shared.release(st.dir for st in state.job.stages)
        with lock:
            state.status = "done"
            write_manifest()

    def run_step(state: JobState, step: Step) -> bool:
        """Run or reuse one step of ``state``'s job; False when the job cannot go on."""
        if stop.is_set():  # interrupted while this job waited for a shared stage
            return False
        label = f"{state.job.method} seed {state.job.seed}" + (
            "" if step.name == "main" else f" [{step.name}: {step.kind}]"
        )
        with lock:
            counter["started"] += 1
            k = counter["started"]
            state.status = "running"
        failed = shared.failures.get(step.dir)
        if failed is not None:  # a shared stage failed in another job: not tried again
            with lock:
                state.status, state.error = "failed", f"shared stage {step.name}: {failed}"
                write_manifest()
            say(f"[{k}/{n_steps}] {label}: FAILED (the shared stage failed: {failed})")
            return False
        action = _action(step)
        cost = _read_cost(step.folder) if action == "skip" else None
        if cost is not None:
            say(f"[{k}/{n_steps}] {label}: finished before, reusing {_rel(step.dir, root)}")
        else:
            say(f"[{k}/{n_steps}] {label}: running -> {_rel(step.folder.run_log, root)}")
            try:
                cost, node = _execute(step, executor, slots, resume=action == "resume", label=label)
            except StepError as exc:
                if stop.is_set():  # interrupted with the suite: resumes next time
                    return False
                if step.shared:
                    shared.failures[step.dir] = str(exc)
                with lock:
                    state.status, state.error = "failed", str(exc)
                    write_manifest()
                say(f"[{k}/{n_steps}] {label}: FAILED ({exc})\n{_tail(step.folder.run_log)}")
                return False
            on = f" on {node}" if node else ""
            say(
                f"[{k}/{n_steps}] {label}: done in {_fmt_seconds(cost.seconds)}{on} "
                f"(suite {_fmt_seconds(time.perf_counter() - t0)} so far)"
            )
        with lock:
            state.costs[step.name] = cost
            write_manifest()
        return True

    write_manifest()
    where = executor.open()
    try:
        say(
            f"suite {suite.name!r}: {len(suite.runs)} method(s) x {len(suite.seeds)} seed(s) = "
            f"{len(plan)} job(s), {len({st.dir for j in plan for st in j.steps})} process(es), "
            f"{slots} at a time" + (f" on {where}" if where else "") + f" -> {root}"
        )
        _run_jobs(states, run_job, slots, executor, stop, write_manifest, pick=shared.pick)
    finally:
        executor.close()
    write_manifest()
    failed = [s for s in states if s.status == "failed"]
    if failed:
        names = ", ".join(f"{s.job.method} seed {s.job.seed}" for s in failed)
        raise SuiteFailed(
            f"{len(failed)} of {len(states)} job(s) failed ({names}); see their run.log; "
            "fix the cause and re-run the same command to resume"
        )
    return root / MANIFEST_NAME


class _SharedSteps:
    """The stages several jobs share (``shared: true``, one folder per seed).

    One lock per folder: the first job to reach it runs it, the others wait and then reuse
    it (its ``cost.json`` says it finished). A failure is remembered, so the other jobs fail
    with it rather than run it again. A job taken from the queue claims its shared stages
    until it is past them; :meth:`pick` gives a free thread a job whose shared stages no other
    job claims, so the trunks of different seeds run side by side instead of a thread
    waiting for another's.
    """

    def __init__(self, plan: Sequence[Job]) -> None:
        self._locks = {st.dir: threading.Lock() for j in plan for st in j.stages if st.shared}
        self._claimed: set[Path] = set()
        self._guard = threading.Lock()
        self.failures: dict[Path, str] = {}

    @contextmanager
    def hold(self, step: Step) -> Iterator[None]:
        """Run ``step`` alone when it is shared; afterwards other jobs may take it."""
        lock = self._locks.get(step.dir)
        if lock is None:
            yield
            return
        try:
            with lock:
                yield
        finally:
            self.release([step.dir])

    def pick(self, queue: list[JobState]) -> JobState:
        """Remove and return the first job of ``queue`` whose shared stages no job claims
        (else the first job: it will wait); the job claims its shared stages."""
        with self._guard:
            index = next((i for i, s in enumerate(queue) if not self._dirs(s) & self._claimed), 0)
            state = queue.pop(index)
            self._claimed |= self._dirs(state)
        return state

    def release(self, dirs: Iterable[Path]) -> None:
        with self._guard:
            self._claimed -= set(dirs)

    def _dirs(self, state: JobState) -> set[Path]:
        return {st.dir for st in state.job.stages if st.dir in self._locks}


def _run_jobs(
    states: Sequence[JobState],
    run_job: Callable[[JobState], None],
    slots: int,
    executor: Executor,
    stop: threading.Event,
    write_manifest: Callable[[], None],
    *,
    pick: Callable[[list[JobState]], JobState],
) -> None:
    """Run every job on ``slots`` threads, each taking the next job ``pick`` removes from the
    queue; on Ctrl-C / SIGTERM stop them and re-raise."""
    queue = list(states)
    queue_lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set():
            with queue_lock:
                if not queue:
                    return
                state = pick(queue)
            run_job(state)

    pool = ThreadPoolExecutor(max_workers=slots)
    futures = [pool.submit(worker) for _ in range(min(slots, len(states)))]
    terminated = threading.Event()  # SIGTERM reached the suite alone: stop its runs at once
    with terminate_as_interrupt(on_terminate=terminated.set):
        try:
            pending = set(futures)
            while pending:  # short waits: the main thread must run to see Ctrl-C / SIGTERM
                _, pending = wait(pending, timeout=0.5)
            for f in futures:
                f.result()
        except BaseException:
            # Ctrl-C in a terminal reaches local runs too (same process group): they
            # checkpoint and exit. Start nothing new, pass the interrupt on to runs that did
            # not get it (the suite alone was signalled, or the runs are on a cluster), wait
            # for them and keep the manifest consistent.
            stop.set()
            executor.interrupt(grace=0.0 if terminated.is_set() else 5.0)
            pool.shutdown(wait=True, cancel_futures=True)
            for s in states:
                if s.status == "running":
                    s.status = "pending"
            write_manifest()
            raise
    pool.shutdown()


# ---------------------------------------------------------------------------- one process
def _command(step: Step, resume: bool) -> tuple[str, ...]:
    """``mixlab`` arguments: ``search`` / ``doremi`` (which resume their own runs) or ``train
    [--resume]``."""
    plan = str(step.folder.planned_config)
    if step.kind == "search":
        spec = str(step.folder.search_spec)
        cmd: tuple[str, ...] = ("search", spec, "--out", str(step.dir))
        return cmd + (("--allow-unrecommended",) if step.allow_unrecommended else ())
    if step.kind == "doremi":
        return ("doremi", "--config", plan, "--out", str(step.dir))
    cmd = ("train", "--config", plan, "--out", str(step.dir))
    return (*cmd, "--resume") if resume else cmd


def _execute(
    step: Step, executor: Executor, slots: int, *, resume: bool, label: str
) -> tuple[StepCost, str | None]:
    """Write the step's plan, run it with ``executor``, record its cost; and where it ran."""
    step.dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(step.dir)
    folder = step.folder
    step.config.save(folder.planned_config)
    if step.search is not None:
        write_text(folder.search_spec, yaml.safe_dump(step.search, sort_keys=False))
    partial = _read_json(folder.partial_cost) or {}
    env = {"PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "15"}
    threads = executor.threads(step.config, slots)
    if threads is not None and step.config.train.threads == 0:
        env["OMP_NUM_THREADS"] = str(threads)
    launch = Launch(
        args=_command(step, resume),
        dir=step.dir,
        log=folder.run_log,
        cwd=Path.cwd(),
        env=env,
        threads=threads,
        kind=step.kind,
        label=label,
        retry_checkpoint=_retry_checkpoint(step, resume),
    )
    done = executor.run(launch)
    seconds = float(partial.get("seconds", 0.0)) + done.seconds
    peak = done.peak_rss_mb
    old_peak = partial.get("peak_rss_mb")
    if peak is not None and old_peak is not None:
        peak = max(peak, float(old_peak))
    if done.code != 0:
        write_json(folder.partial_cost, {"seconds": seconds, "peak_rss_mb": peak})
        raise StepError(f"exit status {done.code}")
    cost = StepCost(seconds, _tokens(step), peak)
    write_json(folder.cost, cost.to_dict())
    folder.partial_cost.unlink(missing_ok=True)
    return cost, done.node


def _retry_checkpoint(step: Step, resume: bool) -> Path | None:
    """The checkpoint whose later appearance means a retried attempt must pass ``--resume``.

    Only ``mixlab train`` needs the flag (``doremi`` and ``search`` resume on their own), and
    only a step that starts now, with no checkpoint yet.
    """
    checkpoint = step.folder.checkpoint
    if step.kind != "train" or resume or checkpoint.exists():
        return None
    return checkpoint


def _tokens(step: Step) -> int:
    """Tokens trained: one config's budget, or every training of a DoReMi or search stage."""
    if step.kind == "train":
        return step.tokens
    return sum(
        run_tokens(RunConfig.from_dict(read_yaml_mapping(f)))
        for f in sorted(step.dir.rglob(RunFolder.CONFIG))
    )


def _action(step: Step) -> Action:
    """Start, resume or skip a step's folder (:func:`~mixlab.train.resume.next_action`).

    Its settings are ``planned_config.yaml``; it is finished once ``cost.json`` is written. An
    attempt that failed before its first checkpoint starts over, with the new plan if the
    suite changed since (the cost of the old attempts is dropped then).
    """
    folder = step.folder
    planned = step.config.to_dict()
    plan = folder.planned_config
    saved = resolved(read_yaml_mapping(plan)) if plan.exists() else None
    finished = _read_cost(folder) is not None
    if saved is None and finished:
        saved = planned  # a finished folder whose plan was deleted: reused
    if saved is not None and not finished and not _has_progress(step):
        if saved != planned:
            folder.partial_cost.unlink(missing_ok=True)
        saved = None
    return next_action(
        step.dir,
        saved,
        planned,
        finished=finished,
        hint="delete that folder to redo it with the new settings, or pass --fresh to redo all",
    )


def _has_progress(step: Step) -> bool:
    """Whether the folder holds a checkpoint (a run that failed before its first has none)."""
    if step.kind != "train":
        return any(step.dir.rglob(RunFolder.CHECKPOINT))
    return step.folder.checkpoint.exists()


# ---------------------------------------------------------------------------- manifest
def _write_manifest(
    root: Path,
    suite: Suite,
    states: Sequence[JobState],
    earlier: Sequence[dict[str, Any]] = (),
) -> None:
    """suite.json: this plan's runs, then the ``earlier`` ones (:func:`_earlier_runs`)."""
    runs = []
    for s in states:
        main = s.costs.get("main")
        runs.append(
            {
                "method": s.job.method,
                "seed": s.job.seed,
                "dir": _rel(s.job.dir, root),
                "status": s.status,  # pending | running | done | failed
                "error": s.error,
                "seconds": main.seconds if main else None,
                "tokens": main.tokens if main else s.job.main.tokens,
                "peak_rss_mb": main.peak_rss_mb if main else None,
                "stages": [
                    {
                        "name": st.name,
                        "kind": st.kind,
                        "dir": _rel(st.dir, root),
                        **({"shared": True} if st.shared else {}),
                        **(s.costs[st.name].to_dict() if st.name in s.costs else {}),
                    }
                    for st in s.job.stages
                ],
            }
        )
    manifest = {
        "version": MANIFEST_VERSION,
        "name": suite.name,
        "source": suite.source,
        "baseline": suite.baseline,
        "metric": suite.metric,
        "seeds": sorted({*suite.seeds, *(int(r["seed"]) for r in earlier)}),
        "methods": list(dict.fromkeys([*suite.methods, *(str(r["method"]) for r in earlier)])),
        "runs": [*runs, *earlier],
    }
    write_json(root / MANIFEST_NAME, manifest)


def _earlier_runs(root: Path, planned: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """The runs the folder's previous manifest lists and this plan does not (a compare with
    other ``--seeds`` / ``--methods``, or another suite, into the same ``--out``) whose folders
    are still there: kept, so that ``mixlab report`` on the folder still sees them."""
    try:
        old = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        entries = old["runs"] if old.get("version") == MANIFEST_VERSION else []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [
        e
        for e in entries
        if isinstance(e, dict)
        and (e.get("method"), e.get("seed")) not in planned
        and isinstance(e.get("dir"), str)
        and (root / e["dir"]).is_dir()
    ]


def _read_cost(folder: RunFolder) -> StepCost | None:
    raw = _read_json(folder.cost)
    if raw is None:
        return None
    return StepCost(float(raw["seconds"]), int(raw["tokens"]), raw.get("peak_rss_mb"))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def _fmt_seconds(s: float) -> str:
    m, sec = divmod(round(s), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"
