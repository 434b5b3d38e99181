"""Use mixlab's mixtures and mixing policies in your own training code.

* :mod:`~mixlab.integrations.torch_dataset` — :class:`MixtureDataset`, a PyTorch
  ``IterableDataset`` over a shard store whose weights can change while iterating;
* :mod:`~mixlab.integrations.controller` — :class:`MixingController`: per-domain losses of
  each step in, ``policy.update(feedback)``, new weights into the dataset (the plain PyTorch
  adapter: call ``observe`` per micro-batch and ``step`` per optimiser step);
* :mod:`~mixlab.integrations.hf_trainer` — ``MixingCallback`` for the Hugging Face ``Trainer``
  (extra ``mixlab[hf-trainer]``);
* :mod:`~mixlab.integrations.lightning` — ``MixingCallback`` for Lightning (extra
  ``mixlab[lightning]``).

The framework adapters are separate modules that import their framework when imported, so
``import mixlab.integrations`` needs neither; a missing framework raises a ConfigError that
names the extra to install.
"""

from __future__ import annotations

from mixlab.integrations.controller import MixingController
from mixlab.integrations.torch_dataset import MixtureDataset

__all__ = ["MixingController", "MixtureDataset"]
