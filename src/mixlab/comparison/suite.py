"""A comparison suite: named runs that share one base config, for one or more seeds.

A suite is a YAML file (``configs/suites/example.yaml``; the demo's is
``mixlab/configs/demo_suite.yaml``)::

    name: my-suite
    base_config: tiny_cpu.yaml        # optional recipe (relative to this file) ...
    base:                             # ... and/or fields on top of it: store, model, budget
      data: {store: shards}
      train: {max_steps: 600, eval_every: 30}
    seeds: [0, 1, 2]
    baseline: uniform                 # steps-to-target and paired differences are against it
    metric: mean_ppl                  # the aggregate those use (eval/<metric>)
    branch: {at: 0.3}                 # optional: every run starts from one shared trunk per seed
    runs:
      - name: odm
        set: {mixing.name: odm}
      - name: doremi                  # a multi-stage method: stages run first, in order
        stages:
          - {name: weights, kind: doremi, set: {model.preset: llama-tiny}}
        set: {mixing.name: fixed, mixing.weights_file: "{stage:weights}/doremi_weights.json"}
      - name: acodm
        stages:
          - name: proxy
            set: {model.preset: llama-tiny, mixing.name: acodm,
                  mixing.policy_out: "{dir}/policy.acodm.pt"}
        set: {mixing.name: acodm, mixing.policy_in: "{stage:proxy}/policy.acodm.pt"}
      - name: search                  # mixture search from a swarm of proxy runs
        stages:
          - name: swarm
            kind: search
            set: {train.max_steps: 60}            # the proxy: base + set
            search: {swarm: {runs: 12, max_epochs: 4}, fit: {law: loglinear}}
        set: {mixing.name: fixed, mixing.weights_file: "{stage:swarm}/search_weights.json"}

Each run's config is ``base_config`` + ``base`` + the run's (or stage's) ``set`` with
``train.seed`` set to the seed. ``set`` values that are strings (or lists of strings) may hold
placeholders: ``{dir}`` (this run's or stage's folder), ``{stage:NAME}`` (a stage's folder of
the same run and seed), ``{seed}`` and ``{suite}`` (the suite's output folder). A stage with
``shared: true`` runs once per seed for every run that lists it, in
``<out>/_shared/seed<k>/<stage>/``: e.g. the trunk that the runs of a branched comparison start
from (``train.branch_from``), or one uniform proxy several methods read. Each run must resolve
it to the same config and kind (else an error names the field). A suite's ``branch`` (or
``mixlab compare --branch-at``) gives every run such a stage, ``trunk``: the run's config
without its ``mixing`` settings, with ``branch.set`` (default ``mixing.name: uniform``), stopped
at step ``at`` (or that fraction of the run's steps) with the whole run's LR schedule; the run
branches from it (``train.branch_from``, :mod:`mixlab.train.branch`). Stage kinds:
``train`` (a ``mixlab train`` run, the default), ``doremi`` (``mixlab doremi``: reference + proxy ->
``doremi_weights.json``) and ``search`` (``mixlab search``: a swarm of proxy runs ->
``search_weights.json``). A ``search`` stage's config (base + its ``set``) is the proxy run;
its ``search`` mapping holds the other sections of a search spec (``swarm``, ``fit``, ``eval``,
``allow_unrecommended``; see :mod:`mixlab.search.spec`). Its ``target`` defaults to the budget
of the job's main run, ``swarm.proxy_seeds`` to ``[seed]`` and ``swarm.seed`` to the seed, so
each seed of the suite runs its own swarm (for one shared search, run ``mixlab search`` once
and give its weights file to a plain run).

The baselines that are hard to beat are always part of a suite (METHODS.md §5 and §7):
``uniform``, ``natural``, ``unimax`` (uniform up to ``mixing.unimax.max_epochs`` epochs of any
domain) and ``stratified`` (uniform shares drawn exactly in every step, Aioli's strong
baseline); each is added when no run has its name, and they come first, unless
``include_baselines: false``.

:func:`load_suite` parses and validates a file (every error names the file and the run);
:meth:`Suite.plan` expands it into :class:`Job` objects, one per (run, seed), each with its
resolved, validated :class:`~mixlab.config.RunConfig` objects and folders
``<out>/<run>/seed<k>/`` (stages under ``.../stages/<stage>/``).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mixlab.config import RunConfig, apply_override, read_yaml_mapping, set_path
from mixlab.errors import ConfigError, MixlabError, reject_unknown_keys
from mixlab.train.run_folder import RunFolder, differences

log = logging.getLogger(__name__)

STAGE_KINDS = ("train", "doremi", "search")
# The baselines every comparison needs (METHODS.md §5, §7): name -> its settings.
BASELINES: dict[str, tuple[tuple[str, Any], ...]] = {
    "uniform": (("mixing.name", "uniform"),),
    "natural": (("mixing.name", "natural"),),
    "unimax": (("mixing.name", "unimax"),),  # uniform up to an epoch cap (arXiv 2304.09151)
    "stratified": (("mixing.name", "uniform"), ("mixing.sampling", "stratified")),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PLACEHOLDER = re.compile(r"\{(dir|seed|suite|stage:[A-Za-z0-9_.-]+)\}")
_SUITE_KEYS = {
    "name",
    "base_config",
    "base",
    "seeds",
    "baseline",
    "metric",
    "runs",
    "include_baselines",
    "branch",
}
_BRANCH_KEYS = {"at", "set"}
TRUNK = "trunk"  # the stage name a suite's ``branch`` gives every run
_RUN_KEYS = {"name", "set", "stages"}
_STAGE_KEYS = {"name", "kind", "set", "search", "shared"}
SHARED_DIR = "_shared"  # <out>/_shared/seed<k>/<stage>/: stages shared between runs
_SEARCH_KEYS = {"target", "swarm", "fit", "eval", "allow_unrecommended"}


@dataclass(frozen=True)
class StageSpec:
    """An extra training stage a method needs before its main run (proxy, reference, ...)."""

    name: str
    kind: str = "train"
    overrides: tuple[tuple[str, Any], ...] = ()
    search: Mapping[str, Any] | None = None  # kind search: the spec's other sections
    shared: bool = False  # one folder per seed for every run that has it (same config)


@dataclass(frozen=True)
class RunSpec:
    """One named method of the suite: overrides of the base config, optional stages first."""

    name: str
    overrides: tuple[tuple[str, Any], ...] = ()
    stages: tuple[StageSpec, ...] = ()


@dataclass(frozen=True)
class Step:
    """One process to run: a stage or the main run of a job, with its resolved config."""

    name: str  # "main" or the stage name
    kind: str  # "train" | "doremi" | "search"
    dir: Path
    config: RunConfig
    search: dict[str, Any] | None = None  # kind search: the whole search spec (base = config)
    allow_unrecommended: bool = False  # kind search: go on when the fit is not trusted
    shared: bool = False  # a stage other runs of the same seed use too (runs once)
    trunk_steps: int = 0  # train.branch_from is a stage of the job: the steps it trained

    @property
    def tokens(self) -> int:
        """Tokens this step trains itself (a DoReMi stage trains several configs). A branch
        from a stage of its job trains ``max_steps - trunk_steps`` steps; the trunk's tokens are
        that stage's, so the job's total counts each step once."""
        return run_tokens(self.config, after=self.trunk_steps)

    @property
    def folder(self) -> RunFolder:
        """The files of ``dir`` (a DoReMi stage's holds its runs in subfolders)."""
        return RunFolder(self.dir)


def run_tokens(cfg: RunConfig, *, after: int = 0) -> int:
    """Tokens a run of ``cfg`` trains after step ``after``: steps x sequences per step x
    sequence length."""
    t = cfg.train
    return (t.max_steps - after) * t.batch_size * t.grad_accum * cfg.data.seq_len


@dataclass(frozen=True)
class Job:
    """One (method, seed): its stages in order, then the main run."""

    method: str
    seed: int
    dir: Path
    stages: tuple[Step, ...]
    main: Step

    @property
    def steps(self) -> tuple[Step, ...]:
        return (*self.stages, self.main)


@dataclass(frozen=True)
class Branch:
    """A suite's ``branch``: every run branches from a shared trunk at step ``at``.

    ``at`` is a step (an int >= 1) or a fraction of each run's ``train.max_steps`` (a float in
    (0, 1)); the trunk is the run's config (base, ``--set`` and the run's own non-``mixing``
    settings) with ``overrides`` (default ``mixing.name: uniform``), stopped at that step with
    the whole run's LR schedule (:mod:`mixlab.train.branch`).
    """

    at: int | float
    overrides: tuple[tuple[str, Any], ...] = ()

    def step(self, max_steps: int) -> int:
        return self.at if isinstance(self.at, int) else round(self.at * max_steps)

    def apply(self, run: RunSpec, max_steps: int, where: str) -> RunSpec:
        """``run`` with the trunk as its first stage and its main run branching from it."""
        b = self.step(max_steps)
        if not 1 <= b < max_steps:
            raise ConfigError(
                f"{where}: branch.at {self.at} is step {b} of {max_steps}: it must fall inside "
                "the run (1 <= step < train.max_steps)"
            )
        if any(s.name == TRUNK for s in run.stages):
            raise ConfigError(
                f"{where}: a stage is named {TRUNK!r}, the name branch gives its trunk"
            )
        if any(key == "train.branch_from" for key, _ in run.overrides):
            raise ConfigError(
                f"{where}: sets train.branch_from itself; with the suite's branch every run "
                "branches from the shared trunk (drop one of them)"
            )
        own = tuple((k, v) for k, v in run.overrides if not k.startswith("mixing."))
        trunk = StageSpec(
            TRUNK,
            overrides=(
                *own,
                ("mixing.name", "uniform"),
                *self.overrides,
                ("train.max_steps", b),
                ("train.schedule_steps", max_steps),
            ),
            shared=True,
        )
        branch_from = ("train.branch_from", "{stage:" + TRUNK + "}")
        return RunSpec(run.name, (*run.overrides, branch_from), (trunk, *run.stages))


@dataclass
class Suite:
    """A parsed suite file; :meth:`plan` turns it into jobs."""

    name: str
    base: dict[str, Any]
    runs: list[RunSpec]
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str = "uniform"
    metric: str = "mean_ppl"
    source: str = "<suite>"
    branch: Branch | None = None  # every run starts from one shared trunk per seed

    @property
    def methods(self) -> list[str]:
        return [r.name for r in self.runs]

    def select(
        self, only: Iterable[str] | None = None, exclude: Iterable[str] | None = None
    ) -> Suite:
        """A copy with only some methods (``only``) or without some (``exclude``)."""
        names = set(self.methods)
        picked = list(only) if only else list(self.methods)
        dropped = set(exclude or ())
        for n in [*picked, *dropped]:
            if n not in names:
                raise ConfigError(
                    f"{self.source}: no run named {n!r}; the suite has: {', '.join(self.methods)}"
                )
        keep = [r for r in self.runs if r.name in picked and r.name not in dropped]
        if not keep:
            raise ConfigError(f"{self.source}: no run left to compare after --methods/--exclude")
        out = copy.copy(self)
        if self.baseline not in [r.name for r in keep]:
            out.baseline = keep[0].name
            log.warning("baseline %r is not selected: using %r", self.baseline, out.baseline)
        out.runs = keep
        return out

    def branched(self, at: int | float) -> Suite:
        """A copy whose runs branch at ``at`` (a step, or a fraction of the steps) from one
        shared trunk per seed (the suite's ``branch``, keeping its trunk settings)."""
        out = copy.copy(self)
        out.branch = Branch(
            check_branch_at(at, "branch"), self.branch.overrides if self.branch else ()
        )
        return out

    def plan(self, out: str | Path, *, overrides: Sequence[str] = ()) -> list[Job]:
        """Resolve every (run, seed) into folders and validated configs.

        ``overrides`` (``a.b=c`` strings, e.g. from ``--set``) apply to the base of every run
        and stage before their own ``set``. A ``shared`` stage gets one folder per seed,
        ``<out>/_shared/seed<k>/<stage>/``; every run that has it must resolve it to the same
        config (an error names the field that differs).
        """
        root = Path(out).resolve()
        jobs = []
        shared: dict[Path, tuple[str, Step]] = {}  # folder -> (first run, its step)
        for seed in self.seeds:
            for run in self.runs:
                jdir = root / run.name / f"seed{seed}"
                where = f"{self.source}: run {run.name!r}"
                if self.branch is not None:  # the trunk stops at a step of this run's budget
                    dirs = _stage_dirs(run, root, jdir, seed)
                    plain = self._step(
                        "main", "train", jdir, run.overrides, overrides, seed, root, dirs, where
                    )
                    run = self.branch.apply(run, plain.config.train.max_steps, where)
                stage_dirs = _stage_dirs(run, root, jdir, seed)
                main = self._step(
                    "main", "train", jdir, run.overrides, overrides, seed, root, stage_dirs, where
                )
                stages = []
                for s in run.stages:
                    swhere = f"{where}, stage {s.name!r}"
                    step = self._step(
                        s.name,
                        s.kind,
                        stage_dirs[s.name],
                        s.overrides,
                        overrides,
                        seed,
                        root,
                        stage_dirs,
                        swhere,
                    )
                    spec, allow = None, False
                    if s.kind == "search":
                        spec = _search_spec(s, step, main, seed, swhere)
                        allow = bool((s.search or {}).get("allow_unrecommended", False))
                    step = replace(step, search=spec, allow_unrecommended=allow, shared=s.shared)
                    if s.shared:
                        _check_shared(step, run.name, shared, swhere)
                    stages.append(step)
                stages = [_with_trunk(st, stages) for st in stages]
                jobs.append(Job(run.name, seed, jdir, tuple(stages), _with_trunk(main, stages)))
        return jobs

    def _step(
        self,
        name: str,
        kind: str,
        folder: Path,
        own: Sequence[tuple[str, Any]],
        global_overrides: Sequence[str],
        seed: int,
        root: Path,
        stage_dirs: Mapping[str, Path],
        where: str,
    ) -> Step:
        raw = copy.deepcopy(self.base)
        try:
            for item in global_overrides:
                apply_override(raw, item)
            for key, value in own:
                value = copy.deepcopy(_fill(value, folder, seed, root, stage_dirs, where))
                set_path(raw, key.split("."), value, where=key)
            set_path(raw, ["train", "seed"], seed, where="train.seed")
            cfg = RunConfig.from_dict(raw)
            cfg.validate()
        except MixlabError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        return Step(name, kind, folder, cfg)


def _stage_dirs(run: RunSpec, root: Path, jdir: Path, seed: int) -> dict[str, Path]:
    """Each stage's folder: the job's ``stages/<name>``, or the seed's shared one."""
    return {
        s.name: root / SHARED_DIR / f"seed{seed}" / s.name if s.shared else jdir / "stages" / s.name
        for s in run.stages
    }


def _check_shared(step: Step, run: str, seen: dict[Path, tuple[str, Step]], where: str) -> None:
    """A shared stage runs once per seed: every run must ask for the same process."""
    other_run, other = seen.setdefault(step.dir, (run, step))
    if other is step:
        return
    differ = differences(_identity(other), _identity(step))
    if differ:
        raise ConfigError(
            f"{where}: shared stage differs from run {other_run!r}'s ({differ[0]}; "
            f"{len(differ)} field(s) differ); every run must resolve a shared stage (a branch's "
            "trunk is one) to the same config"
        )


def _identity(step: Step) -> dict[str, Any]:
    """What makes a step the same process: its kind, config and search spec."""
    return {"kind": step.kind, **step.config.to_dict(), "search": step.search}


def _with_trunk(step: Step, stages: Sequence[Step]) -> Step:
    """``step`` knowing how many steps its trunk trained, when it branches from a stage."""
    origin = step.config.train.branch_from
    for st in stages:
        if origin is not None and st.kind == "train" and Path(origin).resolve() == st.dir:
            return replace(step, trunk_steps=st.config.train.max_steps)
    return step


def _search_spec(stage: StageSpec, step: Step, main: Step, seed: int, where: str) -> dict[str, Any]:
    """The search spec of a ``search`` stage: its config is the proxy, the target defaults to
    the main run's budget, the swarm to this seed; checked now so errors name the stage."""
    from mixlab.search.spec import merge_mappings, parse_search_spec

    options = copy.deepcopy(dict(stage.search or {}))
    options.pop("allow_unrecommended", None)
    t = main.config.train
    per_step = t.batch_size * t.grad_accum * main.config.data.seq_len
    raw: dict[str, Any] = {
        "name": f"{stage.name}-seed{seed}",
        "base": step.config.to_dict(),
        "target": {"max_steps": t.max_steps, "tokens_per_step": per_step},
        "swarm": {"seed": seed, "proxy_seeds": [seed]},
    }
    if "target" in options:
        raw["target"] = options.pop("target")
    merge_mappings(raw, options)
    return parse_search_spec(raw, source=where).to_dict()


def _fill(
    value: Any, folder: Path, seed: int, root: Path, stages: Mapping[str, Path], where: str
) -> Any:
    """``value`` with its placeholders filled: in a string, and in every string of a list."""
    if isinstance(value, list):
        return [_fill(v, folder, seed, root, stages, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "dir":
            return str(folder)
        if key == "seed":
            return str(seed)
        if key == "suite":
            return str(root)
        stage = key.split(":", 1)[1]
        if stage not in stages:
            raise ConfigError(
                f"{where}: {{{key}}} names no stage of this run "
                f"(stages: {', '.join(stages) or 'none'})"
            )
        return str(stages[stage])

    return _PLACEHOLDER.sub(sub, value)


# ---------------------------------------------------------------------------- parsing
def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite YAML file."""
    raw = read_yaml_mapping(path, "suite file")
    return parse_suite(raw, source=str(path), root=Path(path).parent)


def parse_suite(raw: Any, *, source: str = "<suite>", root: Path | None = None) -> Suite:
    """Validate a suite mapping (as read from YAML); ``root`` resolves ``base_config``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'base' and 'runs'")
    reject_unknown_keys(raw, _SUITE_KEYS, source)
    base: dict[str, Any] = {}
    if raw.get("base_config"):
        cfg_path = Path(raw["base_config"])
        if not cfg_path.is_absolute() and root is not None:
            cfg_path = root / cfg_path
        base = read_yaml_mapping(cfg_path, f"{source}: base_config")
    extra = raw.get("base") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{source}: 'base' must be a mapping of config sections")
    _merge(base, extra)

    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError(f"{source}: 'seeds' must be a list of distinct integers >= 0")

    runs_raw = raw.get("runs")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise ConfigError(f"{source}: 'runs' must be a non-empty list of {{name, set}} entries")
    runs = [_parse_run(r, i, source) for i, r in enumerate(runs_raw)]
    names = [r.name for r in runs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{source}: run names must be unique; repeated: {', '.join(sorted(dup))}")
    if raw.get("include_baselines", True):  # baselines first, in BASELINES order
        given = {r.name: r for r in runs}
        first = [given.get(b) or RunSpec(b, BASELINES[b]) for b in BASELINES]
        runs = first + [r for r in runs if r.name not in BASELINES]

    baseline = str(raw.get("baseline", "uniform"))
    if baseline not in [r.name for r in runs]:
        raise ConfigError(
            f"{source}: baseline {baseline!r} is not a run of the suite "
            f"({', '.join(r.name for r in runs)})"
        )
    suite = Suite(
        name=str(raw.get("name") or (Path(source).stem if root else "suite")),
        branch=_parse_branch(raw.get("branch"), source),
        base=base,
        runs=runs,
        seeds=list(seeds),
        baseline=baseline,
        metric=str(raw.get("metric", "mean_ppl")),
        source=source,
    )
    return suite


def parse_branch_at(text: str) -> int | float:
    """``--branch-at``: ``90`` (a step) or ``0.3`` (a fraction of the steps)."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--branch-at: {text!r} is not a step or a fraction") from None
    return check_branch_at(int(value) if value.is_integer() else value, "--branch-at")


def _parse_branch(raw: Any, source: str) -> Branch | None:
    if raw is None:
        return None
    where = f"{source}: branch"
    if not isinstance(raw, dict) or "at" not in raw:
        raise ConfigError(f"{where}: expected a mapping with 'at' (a step, or a fraction like 0.3)")
    reject_unknown_keys(raw, _BRANCH_KEYS, where)
    return Branch(check_branch_at(raw["at"], where), _overrides(raw, where))


def check_branch_at(at: Any, where: str) -> int | float:
    """A step (int >= 1) or a fraction in (0, 1)."""
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise ConfigError(f"{where}: at must be a step or a fraction, got {at!r}")
    if (isinstance(at, int) and at >= 1) or (isinstance(at, float) and 0 < at < 1):
        return at
    raise ConfigError(f"{where}: at {at}: give a step >= 1 or a fraction between 0 and 1")


def _parse_run(raw: Any, index: int, source: str) -> RunSpec:
    where = f"{source}: runs[{index}]"
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{where}: expected a mapping with a 'name' (and 'set', 'stages')")
    name = _check_name(raw["name"], where)
    where = f"{source}: run {name!r}"
    reject_unknown_keys(raw, _RUN_KEYS, where)
    stages_raw = raw.get("stages") or []
    if not isinstance(stages_raw, list):
        raise ConfigError(f"{where}: 'stages' must be a list")
    stages = []
    for j, s in enumerate(stages_raw):
        swhere = f"{where}, stages[{j}]"
        if not isinstance(s, dict) or "name" not in s:
            raise ConfigError(f"{swhere}: expected a mapping with 'name', 'kind', 'set'")
        reject_unknown_keys(s, _STAGE_KEYS, swhere)
        kind = str(s.get("kind", "train"))
        if kind not in STAGE_KINDS:
            raise ConfigError(f"{swhere}: kind {kind!r}; valid: {', '.join(STAGE_KINDS)}")
        search = s.get("search")
        if search is not None and kind != "search":
            raise ConfigError(f"{swhere}: 'search' options need kind: search (got {kind})")
        if search is not None:
            if not isinstance(search, dict):
                raise ConfigError(f"{swhere}: 'search' must map spec sections (swarm, fit, ...)")
            reject_unknown_keys(search, _SEARCH_KEYS, swhere, prefix="search.")
        stage_name = _check_name(s["name"], swhere)
        shared = s.get("shared", False)
        if not isinstance(shared, bool):
            raise ConfigError(f"{swhere}: 'shared' must be true or false, got {shared!r}")
        stages.append(StageSpec(stage_name, kind, _overrides(s, swhere), search, shared))
    if len({s.name for s in stages}) != len(stages):
        raise ConfigError(f"{where}: stage names must be unique")
    return RunSpec(name, _overrides(raw, where), tuple(stages))


def _overrides(raw: Mapping[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    """``set`` as a mapping {a.b: value} or a list of "a.b=value" strings."""
    s = raw.get("set") or {}
    if isinstance(s, list):
        out = []
        for item in s:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"{where}: 'set' items must look like section.field=value")
            key, text = item.split("=", 1)
            out.append((key.strip(), yaml.safe_load(text) if text.strip() else ""))
        return tuple(out)
    if not isinstance(s, dict):
        raise ConfigError(f"{where}: 'set' must map section.field to a value")
    for key in s:
        if not isinstance(key, str) or "." not in key:
            raise ConfigError(f"{where}: 'set' key {key!r}: name a section and field, a.b")
    return tuple((k, v) for k, v in s.items())


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{where}: name {name!r} must be letters, digits, '-', '_' or '.' (it names a folder)"
        )
    return name


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
