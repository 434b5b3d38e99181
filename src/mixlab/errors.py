"""The few exception types mixlab raises on purpose.

Every error a user can cause (bad config, bad data, a run that cannot be resumed) is a
:class:`MixlabError`; the CLI prints its message without a traceback. Internal invariants use
``assert`` and are bugs when they fire. :func:`reject_unknown_keys` is the one unknown-key check
of the mappings mixlab parses by hand (suites, search specs, engine data maps).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


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


def reject_unknown_keys(
    raw: Mapping[str, Any], allowed: Iterable[str], where: str, *, prefix: str = ""
) -> None:
    """Raise a :class:`ConfigError` naming every key of ``raw`` not in ``allowed``.

    The one message for hand-parsed YAML mappings (suites, search specs, data maps):
    ``"<where>: unknown key(s) <prefix>a, <prefix>b; allowed: x, y"``, the allowed keys sorted.
    """
    names = {str(k) for k in allowed}
    unknown = sorted(str(k) for k in raw if str(k) not in names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
            f"allowed: {', '.join(sorted(names))}"
        )
