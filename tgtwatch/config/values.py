"""Value grammars: each turns one value into what tgtd is given, or says why not.

Every accepted value is made of characters no shell, no tgtadm option parser and no tgtd
payload reads specially: it never starts with `-`, never holds whitespace, `,`, `=`, a
quote, a backslash or shell syntax (except the fixed enumerations and mode pages, whose
`:` and `,` tgtd itself defines). Lengths are capped before any pattern is applied.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Callable
from typing import TypeVar

from tgtwatch.model.tree import ChapAccount, Direction, ModePage

E = TypeVar("E")

MAX_NAME = 223  # RFC 3720 3.2.6.1: an iSCSI name is at most 223 bytes
MAX_PATH = 4095
MAX_COMPONENT = 255
CHAP_USER_MAX = 255
CHAP_SECRET_MIN = 12  # RFC 3720 8.2.1: 96 random bits at least, or IPsec is a must
CHAP_SECRET_MAX = 255
_DIGITS = frozenset(string.digits)
_HEX = frozenset(string.hexdigits)
_LOWER_ALNUM = frozenset(string.ascii_lowercase + string.digits)
_NAME_TAIL = _LOWER_ALNUM | frozenset(".-:")
_PATH_CHARS = frozenset(string.ascii_letters + string.digits + "._+:@-")
_CHAP_CHARS = frozenset(string.ascii_letters + string.digits + "._+:@/-")
_SCSI_CHARS = frozenset(string.ascii_letters + string.digits + "._:+-")


def _number(text: str, low: int, high: int) -> int:
    """A decimal number within [low, high]; ASCII digits only (no sign, no 0x, no spaces)."""
    if not text or len(text) > 12 or not set(text) <= _DIGITS:
        raise ValueError(f"{text!r} is not a whole number")
    if len(text) > 1 and text[0] == "0":
        raise ValueError(f"{text!r} has a leading zero")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high}")
    return value


def number(low: int, high: int) -> Callable[[str], int]:
    return lambda text: _number(text, low, high)


def choice(options: dict[str, E]) -> Callable[[str], E]:
    def parse(text: str) -> E:
        if text not in options:
            raise ValueError(f"{text!r} is not one of {' | '.join(options)}")
        return options[text]

    return parse


def _domain_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and set(label) <= _LOWER_ALNUM | {"-"}
        and label[0] != "-"
        and label[-1] != "-"
    )


def iscsi_name(text: str) -> str:
    """An iSCSI name in RFC 3720's normalized form: iqn.YYYY-MM.reversed.domain[:suffix],
    eui. and 16 hex digits, or naa. and 16 or 32 hex digits (RFC 3980)."""
    if len(text) > MAX_NAME:
        raise ValueError(f"an iSCSI name is at most {MAX_NAME} bytes, this one {len(text)}")
    kind, dot, rest = text.partition(".")
    if kind in ("eui", "naa") and dot:
        sizes = (16,) if kind == "eui" else (16, 32)
        if len(rest) in sizes and set(rest) <= _HEX:
            return text
        raise ValueError(f"{text!r}: {kind}. takes {' or '.join(map(str, sizes))} hex digits")
    if kind != "iqn" or not dot:
        raise ValueError(f"{text!r} is not an iSCSI name (iqn., eui. or naa.)")
    date, _, authority = rest.partition(".")
    domain, colon, suffix = authority.partition(":")
    year, dash, month = date.partition("-")
    if not (
        len(year) == 4
        and set(year) <= _DIGITS
        and dash
        and len(month) == 2
        and set(month) <= _DIGITS
        and 1 <= int(month) <= 12
    ):
        raise ValueError(f"{text!r}: iqn. is followed by a date YYYY-MM")
    if not domain or not all(_domain_label(label) for label in domain.split(".")):
        raise ValueError(f"{text!r}: the naming authority must be a reversed domain name")
    if colon and (not suffix or not set(suffix) <= _NAME_TAIL):
        raise ValueError(
            f"{text!r}: after ':' only lowercase letters, digits, '.', '-' and ':' "
            "(RFC 3720's normalized form)"
        )
    return text


def absolute_path(text: str) -> str:
    """An absolute path of plain components: letters, digits and `._+:@-`, no `.`/`..`."""
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    if len(text) > MAX_PATH:
        raise ValueError(f"path is {len(text)} bytes, more than {MAX_PATH}")
    parts = text[1:].split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"{text!r}: empty, '.' or '..' component")
        if len(part) > MAX_COMPONENT:
            raise ValueError(f"{text!r}: a component longer than {MAX_COMPONENT} bytes")
        if part[0] == "-" or not set(part) <= _PATH_CHARS:
            bad = "".join(sorted(set(part) - _PATH_CHARS)) or "-"
            raise ValueError(f"{text!r}: characters outside letters, digits and '._+:@-' ({bad!r})")
    return text


def initiator_address(text: str) -> str:
    """ALL, an IPv4 or IPv6 address, or one with a /prefix: as tgtd's ip_match reads it.
    Returned in one canonical spelling (IPv6 compressed, no brackets)."""
    if text == "ALL":
        return text
    if len(text) > 64:
        raise ValueError(f"{text[:64]!r}... is not an address")
    host, slash, prefix = text.partition("/")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not ALL, an IPv4/IPv6 address or a CIDR") from None
    if "%" in host:
        raise ValueError(f"{text!r}: a zone index is not allowed")
    if not slash:
        return str(address)
    bits = _number(prefix, 0, address.max_prefixlen)
    return f"{address}/{bits}"


def ip_address(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
    if "%" in text:
        raise ValueError(f"{text!r}: a zone index is not allowed")
    return str(address)


def _chap_word(text: str, what: str, low: int, high: int) -> str:
    if not low <= len(text) <= high:
        raise ValueError(f"a CHAP {what} is {low}-{high} characters, this one {len(text)}")
    if text[0] == "-" or not set(text) <= _CHAP_CHARS:
        raise ValueError(
            f"a CHAP {what} is made of letters, digits and '._+:@/-' and does not start with '-'"
        )
    return text


def chap_account(direction: Direction) -> Callable[[str], ChapAccount]:
    """`USER SECRET`, one space between, as tgt-admin splits it (`split(/ /, ...)`)."""

    def parse(text: str) -> ChapAccount:
        words = text.split(" ")
        if len(words) != 2:
            raise ValueError("expected USER SECRET, separated by one space")
        user = _chap_word(words[0], "user", 1, CHAP_USER_MAX)
        secret = _chap_word(words[1], "secret", CHAP_SECRET_MIN, CHAP_SECRET_MAX)
        return ChapAccount(user, secret, direction)

    return parse


def scsi_string(limit: int) -> Callable[[str], str]:
    """An INQUIRY/VPD string tgtd copies into a field of `limit` bytes."""

    def parse(text: str) -> str:
        if not 1 <= len(text) <= limit:
            raise ValueError(f"1-{limit} characters, this one {len(text)}")
        if text[0] == "-" or not set(text) <= _SCSI_CHARS:
            raise ValueError("letters, digits and '._:+-' only, not starting with '-'")
        return text

    return parse


def _byte_number(text: str, high: int) -> int:
    """A mode page field as tgtd's strtol(..., 0) reads it: decimal or 0x hex."""
    if text[:2].lower() == "0x" and 2 < len(text) <= 6 and set(text[2:]) <= _HEX:
        value = int(text[2:], 16)
    elif text and len(text) <= 5 and set(text) <= _DIGITS:
        value = int(text)
    else:
        raise ValueError(f"{text!r} is not a number (decimal or 0x hex)")
    if value > high:
        raise ValueError(f"{text!r} is more than {high}")
    return value


def mode_page(text: str) -> ModePage:
    """PAGE:SUBPAGE:LENGTH followed by exactly LENGTH bytes, `:`-separated."""
    if len(text) > 1000:  # tgtd copies the value into a 1 KiB buffer
        raise ValueError("a mode page is at most 1000 characters")
    fields = text.split(":")
    if len(fields) < 3:
        raise ValueError("expected PAGE:SUBPAGE:LENGTH:BYTE...")
    page = _byte_number(fields[0], 0x3F)
    subpage = _byte_number(fields[1], 0xFF)
    length = _byte_number(fields[2], 0xFF)
    data = tuple(_byte_number(f, 0xFF) for f in fields[3:])
    if len(data) != length:
        raise ValueError(f"length {length} but {len(data)} bytes follow")
    return ModePage(page, subpage, data)


def block_size(text: str) -> int:
    value = _number(text, 512, 65536)
    if value & (value - 1):
        raise ValueError(f"{value} is not a power of two")
    return value
