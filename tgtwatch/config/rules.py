"""The pure rules for instance files: which names count, and what a port or portal may be."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tgtwatch.model.structs import DEFAULT_NAME

MAX_NAME_LENGTH = 64
# What a systemd unit name allows as it is, so `systemctl start tgtd@NAME` needs no escaping.
# Always used with fullmatch: `$` alone would also match before a trailing newline.
_UNIT_SAFE = re.compile(r"[A-Za-z0-9:_.\-]+")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")
# An IPv6 literal, with an optional zone (fe80::1%eth0) of interface-name characters only:
# ipaddress accepts any text after `%`, spaces and shell syntax included.
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.\-]+)?")


def is_candidate(filename: str) -> bool:
    """Whether a directory entry is meant as an instance file at all (else silently ignored).

    Editors' and package managers' leftovers (x.conf~, .x.conf.swp, x.conf.dpkg-new,
    x.conf.rpmsave, x.conf.orig, x.tmp) never end in `.conf`, and dotfiles are hidden.
    """
    return not filename.startswith(".") and filename.endswith(".conf") and ".dpkg-" not in filename


def name_problem(stem: str) -> str | None:
    """Why a file stem cannot name an instance, or None."""
    if stem == DEFAULT_NAME:
        return f"the name {DEFAULT_NAME!r} is reserved for the instance under tgt_dir"
    if len(stem) > MAX_NAME_LENGTH:
        return f"name is {len(stem)} characters, more than {MAX_NAME_LENGTH}"
    if not _UNIT_SAFE.fullmatch(stem):
        bad = sorted({c for c in stem if not _UNIT_SAFE.fullmatch(c)})
        return (
            f"name {stem!r} has characters a systemd unit name does not allow: "
            f"{''.join(bad)!r} (allowed: letters, digits, ':', '_', '.', '-')"
        )
    return None


@dataclass(frozen=True)
class Portal:
    host: str  # as tgtd takes it: 0.0.0.0, [::1], a hostname
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class RuleError(ValueError):
    """A value that breaks a rule; the message is for the operator."""


def parse_port(text: str, what: str) -> int:
    if not _PORT.fullmatch(text):
        raise RuleError(f"{what} {text!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise RuleError(f"{what} {port} is outside 1-65535")
    return port


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        if not host.endswith("]") or not _IPV6.fullmatch(host[1:-1]):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.split("."))


def parse_portal(text: str) -> Portal:
    """PORTAL_OPTS: exactly one `HOST:PORT` (IPv4, [IPv6] or hostname); nothing else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise RuleError(f"PORTAL_OPTS {text!r} is not HOST:PORT")
    if not _valid_host(host):
        raise RuleError(f"PORTAL_OPTS {text!r}: {host!r} is not an IPv4 address, [IPv6] or host")
    return Portal(host, parse_port(port, "PORTAL_OPTS port"))


def resolve_ports(socket_opts: str | None, portal_opts: str | None) -> Portal:
    """The portal an instance file asks for, from SOCKET_OPTS and/or PORTAL_OPTS.

    Either alone is enough: SOCKET_OPTS alone listens on 0.0.0.0 at that port.
    """
    if socket_opts is None and portal_opts is None:
        raise RuleError("neither SOCKET_OPTS nor PORTAL_OPTS names the port")
    portal = parse_portal(portal_opts) if portal_opts is not None else None
    control = parse_port(socket_opts, "SOCKET_OPTS") if socket_opts is not None else None
    if portal is not None and control is not None and portal.port != control:
        raise RuleError(f"SOCKET_OPTS {control} and the port of PORTAL_OPTS {portal} disagree")
    if portal is not None:
        return portal
    assert control is not None
    return Portal("0.0.0.0", control)
