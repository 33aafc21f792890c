"""Identifier syntax: ``prefix/suffix``, e.g. ``88.118.8/PRODUCT-2024-000123``.

A parsed :class:`Handle` keeps the text exactly as the client sent it (replies
echo it) next to ``key``, the normalised form used for lookups and storage.
Prefixes always compare case-insensitively; suffixes do too unless the node is
configured case-sensitive (Handle.Net's ``case_sensitive = no`` is the default,
and like it we store the upper-cased key, so listings come back upper case).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from protocol.errors import InvalidHandle

#: Prefix handles live under this prefix: ``0.NA/88.100.1`` describes ``88.100.1``.
PREFIX_NA = "0.NA"
MAX_HANDLE_BYTES = 255

# C0 controls, DEL and C1 controls: never part of an identifier.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Handle:
    text: str  # as sent by the client
    prefix: str  # as sent
    suffix: str  # as sent
    key: str  # normalised: the lookup and storage key

    # Not generated: a frozen dataclass's __init__ costs ~3x this, and a batch
    # parses thousands of handles (see protocol.values.HandleValue).
    def __init__(self, text: str, prefix: str, suffix: str, key: str) -> None:
        _set_text(self, text)
        _set_prefix(self, prefix)
        _set_suffix(self, suffix)
        _set_key(self, key)

    @property
    def prefix_key(self) -> str:
        return self.prefix.upper()

    @property
    def is_prefix_handle(self) -> bool:
        """True for ``0.NA/<prefix>`` records, which describe a prefix."""
        return self.prefix_key == PREFIX_NA


_set_text, _set_prefix, _set_suffix, _set_key = (
    Handle.__dict__[f.name].__set__ for f in fields(Handle)
)


def parse_handle(text: str, *, case_sensitive: bool = False) -> Handle:
    """Check ``text`` and split it; raises :class:`InvalidHandle` (rc 102)."""
    if not text:
        raise InvalidHandle("Empty handle invalid")
    if _CONTROL.search(text):
        raise InvalidHandle("Handle contains control characters")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_HANDLE_BYTES:
        raise InvalidHandle(f"Handle longer than {MAX_HANDLE_BYTES} bytes")
    prefix, slash, suffix = text.partition("/")
    if not slash:
        raise InvalidHandle("Handle has no '/' between prefix and suffix")
    if not prefix:
        raise InvalidHandle("Handle has an empty prefix")
    if not suffix:
        raise InvalidHandle("Handle has an empty suffix")
    _check_prefix_labels(prefix)
    return Handle(text, prefix, suffix, normalise(prefix, suffix, case_sensitive))


def normalise(prefix: str, suffix: str, case_sensitive: bool = False) -> str:
    return f"{prefix.upper()}/{suffix if case_sensitive else suffix.upper()}"


def handle_key(text: str, *, case_sensitive: bool = False) -> str:
    """The storage key of a handle given as text (validated)."""
    return parse_handle(text, case_sensitive=case_sensitive).key


def parse_prefix(text: str) -> str:
    """Validate a bare prefix (``88.100.1`` or ``0.NA/88.100.1``); returns it upper-cased."""
    if text.upper().startswith(PREFIX_NA + "/"):
        text = text[len(PREFIX_NA) + 1 :]
    if not text:
        raise InvalidHandle("Empty prefix invalid")
    if "/" in text or _CONTROL.search(text):
        raise InvalidHandle(f"Invalid prefix {text!r}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_HANDLE_BYTES - len(PREFIX_NA) - 1:
        raise InvalidHandle("Prefix too long")
    _check_prefix_labels(text)
    return text.upper()


def prefix_handle(prefix: str) -> str:
    """The handle that describes ``prefix``: ``0.NA/<PREFIX>``."""
    return f"{PREFIX_NA}/{prefix.upper()}"


def parent_prefixes(prefix: str) -> list[str]:
    """``88.118.8`` → ``["88.118.8", "88.118", "88"]``: longest first, upper-cased."""
    labels = prefix.upper().split(".")
    return [".".join(labels[:n]) for n in range(len(labels), 0, -1)]


def _check_prefix_labels(prefix: str) -> None:
    if prefix.startswith(".") or prefix.endswith(".") or ".." in prefix:
        raise InvalidHandle(f"Prefix {prefix!r} has an empty label")
