"""Metadata strings -> the short prefixes MeCo prepends to documents (arXiv 2501.01956).

MeCo conditions on a document's *source*: the URL's host (``en.wikipedia.org``) for web text,
or a short label for path-like sources (``stdlib/json/decoder.py`` -> ``stdlib/json``). The
shard store keeps one metadata string per document; this module turns it into the text that
is tokenised and prepended, following ``metadata_variant``:

==================  ======================================================================
variant             value put in the template
==================  ======================================================================
host (default)      URL without scheme, cut at the first ``/`` (port and user removed);
                    a path-like source gives its first two path parts
full_url            the metadata string as is
registered_domain   the last two labels of the host (``wikipedia.org``; three for common
                    two-level suffixes such as ``co.uk``)
suffix              the last label of the host (``org``)
hashed              ``site-`` + 8 hex digits of sha256(host): grouping without meaning
fixed               one constant value for every document (a no-information control)
field               the raw metadata string, for non-URL labels (template uses ``{value}``)
==================  ======================================================================

The template (``"URL: {host}\\n\\n"`` by default) may use ``{host}`` or ``{value}``; both
hold the variant's value. A document with empty metadata gets no prefix (``None``).
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from mixlab.errors import ConfigError

VARIANTS = ("host", "full_url", "registered_domain", "suffix", "hashed", "fixed", "field")
DEFAULT_TEMPLATE = "URL: {host}\n\n"
# Second-level labels under which registrations happen one level deeper (co.uk, com.au, ...).
_TWO_LEVEL = {"co", "com", "ac", "gov", "org", "net", "edu"}


def extract_host(metadata: str) -> str:
    """Host of a URL (``https://en.wikipedia.org/wiki/X`` -> ``en.wikipedia.org``).

    Strings without a scheme are read as ``host/path`` when their first part looks like a
    host name (contains a dot), else as a path-like source, whose first two parts are kept
    (``site-packages/torch/include/x.h`` -> ``site-packages/torch``).
    """
    text = metadata.strip()
    if not text:
        return ""
    if "://" in text:
        host = urlsplit(text).hostname or ""
        return host.lower().rstrip(".")
    first = text.split("/", 1)[0]
    if "." in first and " " not in first and not first.endswith((".py", ".h", ".txt", ".md")):
        return first.split("@")[-1].split(":")[0].lower().rstrip(".")
    parts = [p for p in text.split("/") if p]
    return "/".join(parts[:2])


def registered_domain(host: str) -> str:
    labels = host.split(".")
    if len(labels) >= 3 and labels[-2] in _TWO_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def metadata_value(metadata: str, variant: str = "host", fixed_value: str = "example.com") -> str:
    """The value a variant puts into the template; ``""`` means "no prefix"."""
    if variant not in VARIANTS:
        raise ConfigError(f"meco.metadata_variant: {variant!r} is not one of {', '.join(VARIANTS)}")
    if not metadata.strip():
        return ""
    if variant == "fixed":
        return fixed_value
    if variant in ("full_url", "field"):
        return metadata.strip()
    host = extract_host(metadata)
    if not host:
        return ""
    if variant == "host":
        return host
    if variant == "hashed":
        return "site-" + hashlib.sha256(host.encode("utf-8")).hexdigest()[:8]
    if "/" in host:  # path-like source: no domain structure to cut
        return host
    if variant == "registered_domain":
        return registered_domain(host)
    return host.rsplit(".", 1)[-1]  # suffix


def render_prefix(
    metadata: str,
    *,
    variant: str = "host",
    template: str = DEFAULT_TEMPLATE,
    fixed_value: str = "example.com",
) -> str | None:
    """The prefix text for one document, or ``None`` when it has no usable metadata."""
    value = metadata_value(metadata, variant, fixed_value)
    if not value:
        return None
    try:
        return template.format(host=value, value=value)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"meco.metadata_template: {template!r} is not a valid template ({exc}); "
            "use {host} or {value}, e.g. 'URL: {host}\\n\\n'"
        ) from exc
