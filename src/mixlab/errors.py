"""The few exception types mixlab raises on purpose.

Every error a user can cause (bad config, bad data, a run that cannot be resumed) is a
:class:`MixlabError`; the CLI prints its message without a traceback. Internal invariants use
``assert`` and are bugs when they fire.
"""

from __future__ import annotations


class MixlabError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""


class ConfigError(MixlabError):
    """A configuration field is missing, unknown or out of range."""


class DataError(MixlabError):
    """Input data or a shard store is malformed, empty or inconsistent."""


class ResumeError(MixlabError):
    """A checkpoint cannot be resumed (missing, corrupt, or from another store/config)."""


class DivergenceError(MixlabError):
    """Training diverged: too many steps in a row had a non-finite loss or gradient."""
