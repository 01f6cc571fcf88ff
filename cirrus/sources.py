"""What a source names: a layer, or free text.

A source is a cloudpath when it is one word starting with `PROTOCOL://` (free text has spaces,
even when it quotes a URL), and a local layer when it is one word starting with `/`, as
CloudVolume takes a bare path. A `file://` source is resolved when it is recorded, as volume
names are, so no reader resolves it against its own directory and $HOME; lineage and export
name every source by the layer it names, so each spelling of a layer is one source.
"""

from __future__ import annotations

import re

from cirrus.errors import InvalidInput
from cirrus.storage.paths import normalise_cloudpath

_CLOUDPATH = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_LOCAL_FILE = re.compile(r"(?:precomputed://)?file://(?P<path>\S*)")  # what cirrus resolves


def _is_cloudpath(source: str) -> bool:
    """Whether the source is one cloudpath (`gs://lab/aff`), not text that quotes one."""
    return bool(_CLOUDPATH.fullmatch(source))


def _is_local_path(source: str) -> bool:
    """Whether the source is one absolute local path (`/data/aff`), which CloudVolume reads as
    the layer `file:///data/aff`; a relative one cannot be told from a word, so it is text."""
    one_word = not any(character.isspace() for character in source)
    return one_word and source.startswith("/") and not source.startswith("//")


def recorded_source(source: str) -> str:
    """The source as a record keeps it: a `file://` layer (or `precomputed://file://`) by its
    absolute name, resolved here and now as `normalise_cloudpath` resolves a volume; anything
    else exactly as given (remote URLs, free text, a cloudpath cirrus cannot read, a path
    holding another `://`, which resolving would mangle)."""
    local = _LOCAL_FILE.fullmatch(source)
    return normalise_cloudpath(source) if local and "://" not in local["path"] else source


def source_layer(source: str) -> str | None:
    """The layer a source names, as that layer's own records name it (no `precomputed://`, no
    trailing slash), or None for free text. Raises InvalidInput for a cloudpath cirrus cannot
    follow: another protocol or format, or a relative `file://` path recorded before
    `recorded_source` resolved them (resolving it here would use the reader's directory)."""
    if _is_local_path(source):
        return normalise_cloudpath(f"file://{source}")
    if not _is_cloudpath(source):
        return None
    local = _LOCAL_FILE.fullmatch(source)
    if local and not local["path"].startswith("/"):
        raise InvalidInput(
            f"{source!r} is a relative file:// path recorded before cirrus resolved them: the "
            "directory it was relative to is not recorded"
        )
    return normalise_cloudpath(source)
