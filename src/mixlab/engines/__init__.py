"""Engine-native mixture exports: a mixture chosen with mixlab -> files big engines read as is.

Data flow::

    run folder | doremi_weights.json | search_weights.json | {domain: weight}
       --sources.read_source-->  Trajectory (token shares per logged window, tokens per window)
       --phases.compress-->      PhasePlan (<= N piecewise-constant stages at target steps,
                                 achieved shares, epochs for the budget, cap warnings)
       --one writer per engine-->  megatron/ olmo-core/ nanotron/ levanter/ hf-datasets/ mosaic/
                                 + export_plan.json

Where each domain's data lives in the target stack comes from a ``--prefixes`` mapping file
(:mod:`mixlab.engines.datamap`). Each writer module documents what its engine reads, from
the engine's source: Megatron-Core's ``--data-args-path`` / ``--per-split-data-args-path``,
OLMo-core's ``SourceMixtureList`` / ``SourceMixtureDatasetConfig``, nanotron's
``data_stages``, Levanter's ``train_weights``, HF ``interleave_datasets`` probabilities and
mosaic streaming ``proportion`` s. Command line: ``mixlab export-mix`` (:mod:`.cli`).
"""

from mixlab.engines.datamap import DataMap, DomainData, read_data_map
from mixlab.engines.export import ENGINES, ExportResult, export_mix, format_plan
from mixlab.engines.phases import PhasePlan, Stage, TargetRun, compress, optimal_segments
from mixlab.engines.sources import Trajectory, read_run, read_source, read_weights_json

__all__ = [
    "ENGINES",
    "DataMap",
    "DomainData",
    "ExportResult",
    "PhasePlan",
    "Stage",
    "TargetRun",
    "Trajectory",
    "compress",
    "export_mix",
    "format_plan",
    "optimal_segments",
    "read_data_map",
    "read_run",
    "read_source",
    "read_weights_json",
]
