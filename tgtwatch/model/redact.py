"""Mask CHAP secrets in any text (records, command output, argv) before it leaves the process."""

from __future__ import annotations

import re

# Every pattern starts with a literal or an anchor and has no unbounded run before it:
# redact() stays linear on megabytes of command output.
_H = r"[^\S\r\n]"  # whitespace that does not end a line
_MASK = "***"

# A command-line value: shell quoting and backslash escapes are part of it, so that
# `--password='a b'` or `--password=a\ b` is masked whole.
_VALUE = r"""(?:\\[^\r\n]|"[^"\r\n]*"?|'[^'\r\n]*'?|[^\s"'\\])+"""

# targets.conf: `incominguser USER PASS` (and the outgoing/discovery kinds). tgt-admin
# takes everything after the user as the password, so mask up to the end of the line.
_CHAP_LINE = re.compile(
    rf"(?P<keep>(?:incoming|outgoing)(?:discovery)?user(?:{_H}*={_H}*|{_H}+)\S+{_H}+)"
    rf"(?P<secret>\S[^\r\n]*)",
    re.IGNORECASE,
)

# Between an option and its value: `--password=x`, `--password x`.
_SEP = rf"(?:{_H}*={_H}*|{_H}+)"

# tgtadm's getopt_long accepts any unambiguous prefix down to `--pas`.
_LONG = r"--pas(?:s(?:w(?:o(?:r(?:d)?)?)?)?)?"

_LONG_PASSWORD = re.compile(rf"(?P<keep>{_LONG}{_SEP})(?P<secret>{_VALUE})", re.IGNORECASE)

# argv shown as a Python/JSON list: `'--password', 'x'`; the value ends at its quote.
_LIST_PASSWORD = re.compile(
    rf"(?P<keep>{_LONG}(?P<q>['\"]),{_H}*(?P=q))(?P<secret>(?:\\.|(?!(?P=q))[^\\\r\n])+)",
    re.IGNORECASE,
)

# tgtadm's short option, `-w x`, `-wx`, `'-w', 'x'`: only on lines that mention tgtadm,
# `-w` means too many other things elsewhere.
# Anchored at line starts: unanchored, `[^\r\n]*` would rescan a long line from every offset.
_TGTADM_LINE = re.compile(r"(?<![^\r\n])[^\r\n]*tgtadm[^\r\n]*", re.IGNORECASE)
_SHORT_PASSWORD = re.compile(rf"(?P<keep>(?<!\S)-w{_SEP}?)(?P<secret>{_VALUE})")
_LIST_SHORT_PASSWORD = re.compile(
    rf"(?P<keep>-w(?P<q>['\"]),{_H}*(?P=q))(?P<secret>(?:\\.|(?!(?P=q))[^\\\r\n])+)"
)

# Any `...password = x` / `password: x` (iscsiadm's node.session.auth.password, YAML...).
_KEYED_PASSWORD = re.compile(
    rf"(?P<keep>pass(?:word|wd)\w{{0,32}}['\"]?{_H}*[=:]{_H}*)(?P<secret>{_VALUE})",
    re.IGNORECASE,
)


def _mask(match: re.Match[str]) -> str:
    return match.group("keep") + _MASK


def _mask_tgtadm_line(match: re.Match[str]) -> str:
    line = _LIST_SHORT_PASSWORD.sub(_mask, match.group(0))
    return _SHORT_PASSWORD.sub(_mask, line)


def redact(text: str) -> str:
    """``text`` without CHAP secrets; idempotent. Over-masking is preferred to a leak."""
    text = _CHAP_LINE.sub(_mask, text)
    text = _LIST_PASSWORD.sub(_mask, text)
    text = _LONG_PASSWORD.sub(_mask, text)
    text = _TGTADM_LINE.sub(_mask_tgtadm_line, text)
    return _KEYED_PASSWORD.sub(_mask, text)
