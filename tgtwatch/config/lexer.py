"""Split tgt config text into logical lines exactly as Config::General does, or refuse it.

tgt-admin reads its config with Perl's Config::General (v2.65 on Debian 12). This lexer
replays its line handling in the same order (`_read`: C comments, `#` comments, trailing
`\\` continuations, `<x/>` empty blocks, here-documents, includes; `_parse`: block tags
and the key/value split), and accepts only the lines whose reading it knows to be the
same: it refuses here-documents, quotes and stray spaces in block tags, continuations
into a tag or to the end of the file, backslash escapes, and any byte that is not
printable ASCII outside comments. Every step is a str method or a regex without nested
quantifiers: the time is linear in the input, whatever it holds.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

# Perl's \s on a byte string.
WS = " \t\n\r\f\v"
# Config::General's here-doc separator, a fixed string: a line holding it is split there.
EOF_SEPARATOR = "ad7d7b87f5b81d2a0d5cb75294afeb91aa4801b1f8e8532dc1b633c0e1d47037"
_HASH_COMMENT = re.compile(r"(?<!\\)#")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\t]")
_INCLUDE = ("includeoptional", "include")
_TAG_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_TAG_NAME = re.compile(r"[^\s\"<>]+")
_BLANK = re.compile(r"\s")
_SEPARATOR = re.compile(r"[=\s]")


class LineKind(enum.Enum):
    OPTION = "option"
    OPEN = "open"
    CLOSE = "close"
    INCLUDE = "include"


@dataclass(frozen=True)
class Line:
    """One logical line: an option (key, value), a block tag (kind, name) or an include."""

    kind: LineKind
    number: int  # the physical line it starts on
    key: str  # option key, block kind, or include keyword
    value: str | None = None  # option value (None: no value at all), block name, include path
    text: str = ""


class LexError(ValueError):
    """A line tgtwatch cannot read the way Config::General reads it."""

    def __init__(self, number: int, message: str) -> None:
        super().__init__(message)
        self.number = number


def _strip_c_comment(line: str, in_comment: bool) -> tuple[str, bool]:
    """Config::General's C-comment rules, in its order (CComments is on by default)."""
    start = line.find("/*")
    end = line.rfind("*/")
    if start >= 0 and end >= start + 2:
        # s/\s*\/\*.*\*\/\s*// : from the blanks before the first `/*` through the last
        # `*/` and the blanks after it.
        while start > 0 and line[start - 1] in WS:
            start -= 1
        end += 2
        while end < len(line) and line[end] in WS:
            end += 1
        return line[:start] + line[end:], in_comment
    if line.lstrip(WS).startswith("/*"):
        return line, not line.rstrip(WS).endswith("*/")
    if end >= 0:
        return line[end + 2 :], False
    return line, in_comment


def _empty_block(line: str) -> bool:
    """Whether Config::General's `\\s*<([^\\/]+?.*?)\\/>\\s*$` finds an explicit empty block."""
    body = line.rstrip(WS)
    if not body.endswith("/>"):
        return False
    head = body[:-2]
    at = head.find("<")
    while at >= 0:
        if at + 1 < len(head) and head[at + 1] != "/":
            return True
        at = head.find("<", at + 1)
    return False


def _split_option(text: str) -> tuple[str, str | None]:
    """Perl's `split /\\s*=\\s*|\\s+/, $_, 2` on a stripped line."""
    found = _SEPARATOR.search(text)
    if found is None:
        return text, None
    at = found.start()
    char = text[at]
    end = at
    while end < len(text) and text[end] in WS:
        end += 1
    if end < len(text) and text[end] == "=":
        end += 1
        while end < len(text) and text[end] in WS:
            end += 1
    elif char == "=":
        end = at + 1
        while end < len(text) and text[end] in WS:
            end += 1
    return text[:at], text[end:]


def _unquote(value: str | None) -> str | None:
    # `if ($value && $value =~ /^"/ && $value =~ /"$/)`: "0" is false in Perl, and has no quote
    if value and value.startswith('"') and value.endswith('"'):
        return value[1:-1] if len(value) >= 2 else ""
    return value


def _include(text: str, raw: str, number: int) -> Line | None:
    r"""`include FILE` / `includeoptional FILE` (any case), as Config::General's two
    -UseApacheInclude patterns match them; None when the line is no include.

    `raw` is the line with its trailing blanks: the quoted pattern ends at `$` without
    `\s*`, so `include "x" ` is the file `"x"`, quotes and all.
    """
    lowered = text.lower()
    for keyword in _INCLUDE:
        if not lowered.startswith(keyword):
            continue
        rest = text[len(keyword) :]
        quoted = raw[len(keyword) :].lstrip(WS)
        if quoted[:1] in ("'", '"') and len(quoted) >= 2 and quoted.endswith(quoted[0]):
            path = quoted[1:-1]
        elif rest[:1] in WS and rest.strip(WS):
            path = rest.strip(WS)
        else:
            continue
        if path in ("", "0"):  # `if ($incl_file)`: Perl reads both as false, an option
            raise LexError(number, f"{keyword} without a usable file name")
        return Line(LineKind.INCLUDE, number, keyword, path, text)
    return None


def _tag(text: str, number: int) -> Line:
    """A block tag: `<kind name>`, `<kind>` or `</kind>`, spelled plainly."""
    closing = text.startswith("</")
    inner = text[2:-1] if closing else text[1:-1]
    if '"' in inner:
        raise LexError(number, f"quoted block tag {text[:80]!r}: write it without quotes")
    if not inner or inner[0] in WS or inner[-1] in WS:
        raise LexError(
            number,
            f"block tag {text[:80]!r} with a space after '<' or before '>' "
            "(Config::General keeps it in the name)",
        )
    blank = _BLANK.search(inner)
    kind, name = (
        (inner[: blank.start()], inner[blank.start() :].strip(WS)) if blank else (inner, "")
    )
    if (
        not _TAG_KIND.fullmatch(kind)
        or (closing and name)
        or (name and not _TAG_NAME.fullmatch(name))
    ):
        raise LexError(number, f"malformed block tag {text[:80]!r}")
    if closing:
        return Line(LineKind.CLOSE, number, kind, None, text)
    return Line(LineKind.OPEN, number, kind, name or None, text)


def _logical(text: str, number: int, continued: bool, raw: str = "") -> Line:
    """What Config::General makes of one logical line (stripped, not empty)."""
    if EOF_SEPARATOR in text:
        raise LexError(number, "a line holding Config::General's here-document separator")
    if "\\" in text:
        raise LexError(number, "backslash escapes are not supported")
    if text.startswith("<"):
        if continued:
            raise LexError(number, "a continued line that becomes a block tag")
        if text.endswith(">") and len(text) > 2 and text[1] != ">":
            if text[1] == "/" and len(text) == 3:
                raise LexError(number, f"malformed block tag {text!r}")
            return _tag(text, number)
        raise LexError(number, f"malformed block tag {text[:80]!r}")
    if not continued and text[:7].lower() == "include":
        include = _include(text, raw, number)
        if include is not None:
            return include
    key, value = _split_option(text)
    return Line(LineKind.OPTION, number, key, _unquote(value), text)


def lex(text: str) -> Iterator[Line]:
    """The logical lines of a config file; raises LexError at the first unreadable one."""
    if text.startswith("\ufeff"):
        raise LexError(1, "a UTF-8 byte-order mark: save the file without it")
    in_comment = False
    pending: list[str] = []
    pending_line = 0
    physical = text.split("\n")
    if physical[-1] == "":
        physical.pop()  # a final newline ends the last line; it starts none (Perl's <$fh>)
    for number, raw in enumerate(physical, start=1):
        # (the `in` tests only skip work: each step below is a no-op without its character)
        line = raw
        if in_comment or "*" in line:
            line, in_comment = _strip_c_comment(line, in_comment)
            if in_comment:
                continue
        if "#" in line:
            found = _HASH_COMMENT.search(line)
            if found:
                line = line[: found.start()]
        content = line.rstrip("\r")
        if "\r" in content:
            raise LexError(number, "a carriage return inside a line")
        if _UNPRINTABLE.search(content):
            raise LexError(number, "a byte that is not printable ASCII (outside a comment)")
        if line.endswith("\\") and not line.endswith("\\\\"):
            if not pending:
                pending_line = number
            pending.append(line[:-1].lstrip(WS))
            continue
        if pending and "".join(pending) in ("", "0"):
            # Perl's `if ($longline)`: an empty one is false, and this line reads as usual;
            # "0" is false too, but stays and prefixes a later continued line.
            if pending and "".join(pending) == "0":
                raise LexError(pending_line, "a continued line that is just 0")
            pending = []
        if "/>" in line and _empty_block(line):
            if pending:
                raise LexError(number, "a continued line that ends in a block tag")
            yield from _empty_block_lines(line, number)
            continue
        if "<<" in line:
            raise LexError(number, "here-documents (<<) are not supported")
        if pending:
            joined = ("".join(pending) + line.lstrip(WS)).strip(WS)
            pending = []
            if joined:
                yield _logical(joined, pending_line, continued=True)
            continue
        body = line.lstrip(WS)
        stripped = body.rstrip(WS)
        if stripped:
            yield _logical(stripped, number, continued=False, raw=body)
    if pending:
        raise LexError(pending_line, "the file ends inside a continued line")


def _empty_block_lines(line: str, number: int) -> Iterator[Line]:
    """`<kind name/>`: Config::General turns it into `<kind name>` and `</kind>`; only the
    plain spelling reads the same (a blank or CR after `/>` would keep the `/`)."""
    stripped = line.lstrip(WS)
    if not stripped.startswith("<") or not stripped.endswith("/>") or stripped[1:2] == "/":
        raise LexError(number, f"explicit empty block {line.strip(WS)[:80]!r} is not plain")
    opening = _tag(stripped[:-2] + ">", number)
    yield opening
    yield Line(LineKind.CLOSE, number, opening.key, None, f"</{opening.key}>")
