"""The hostile corpus: root-owned, 0644 instance files a tenant could get rendered, each with
the rule that refuses it and the line it names.

Placeholders: {port} (the file's own port, never started), {canary} (a path each injection
would create), {backing} (the tree's allowed backing directory), {good} (the store a good
instance already exports), {iqn} (a valid target name prefix). `prepare` makes what a case
needs on disk (a link to /etc/shadow, a store owned by nobody...).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NOBODY = 65534
HEAD = 'SOCKET_OPTS="{port}"\nPORTAL_OPTS="127.0.0.1:{port}"\n'


@dataclass(frozen=True)
class Case:
    name: str
    rule: str
    line: int | None  # the line the problem names (None: the whole file)
    text: str | bytes
    prepare: Callable[[Path], None] | None = None  # given the backing directory
    why: str = ""


def target(body: str) -> str:
    return HEAD + "<target {iqn}:t>\n" + body + "\n</target>\n"


def _link(name: str, to: str) -> Callable[[Path], None]:
    def make(backing: Path) -> None:
        (backing / name).symlink_to(to)

    return make


def _dir(name: str, mode: int = 0o755, uid: int = 0) -> Callable[[Path], None]:
    def make(backing: Path) -> None:
        path = backing / name
        path.mkdir()
        os.chown(path, uid, -1)
        path.chmod(mode)
        (path / "disk.img").write_bytes(b"\0" * 4096)

    return make


def _file(name: str, uid: int = 0, mode: int = 0o644) -> Callable[[Path], None]:
    def make(backing: Path) -> None:
        path = backing / name
        path.write_bytes(b"\0" * 4096)
        os.chown(path, uid, -1)
        path.chmod(mode)

    return make


def _fifo(name: str) -> Callable[[Path], None]:
    return lambda backing: os.mkfifo(backing / name, 0o600)


def _pathological(size: int) -> str:
    """`<` and spaces, the shape that took tgtwatch 19.5 s of CPU for 3 KB."""
    return ("< " * (size // 2))[:size]


CASES: list[Case] = [
    # --- the findings ----------------------------------------------------------
    Case(
        "isns-shell",
        "grammar",
        3,
        HEAD + "iSNSServerIP 127.0.0.1;touch {canary}\n",
        why="tgt-admin hands it to system()",
    ),
    Case(
        "target-minus-c",
        "syntax",
        3,
        HEAD + "<target {iqn}:a -C 0>\n</target>\n",
        why="tgtadm takes the last -C: another instance's tgtd",
    ),
    Case(
        "acl-minus-c",
        "grammar",
        4,
        target("initiator-address 10.0.0.1 --op delete --mode target --force -C 0"),
    ),
    Case("etc-shadow", "store", 4, target("backing-store /etc/shadow")),
    Case("quoted-kind", "syntax", 3, HEAD + '<"target" {iqn}:q>\n</target>\n'),
    Case("quoted-tag", "syntax", 3, HEAD + '<"target {iqn}:q">\n</target>\n'),
    Case(
        "heredoc",
        "syntax",
        3,
        HEAD + "note <<EOT\n<target {iqn}:hidden>\nbacking-store /etc/shadow\n</target>\nEOT\n",
        why="hides a <target> from every check, not from tgt-admin",
    ),
    Case("heredoc-equals", "syntax", 3, HEAD + "note = <<EOT\nx\nEOT\n"),
    Case("lt-and-spaces", "syntax", 3, HEAD + _pathological(3 * 1024) + "\n"),
    Case(
        "include-long-name",
        "syntax",
        3,
        HEAD + "include " + "a" * 300 + "\n",
        why="[Errno 36] stopped check and plan for the whole directory",
    ),
    # --- shell and tgtadm injection through each kind of value ---------------------------
    Case(
        "name-semicolon", "grammar", 3, HEAD + "<target {iqn}:y;touch${{IFS}}{canary}>\n</target>\n"
    ),
    Case("name-dollar", "syntax", 3, HEAD + "<target {iqn}:$(touch {canary})>\n</target>\n"),
    Case("store-dollar", "grammar", 4, target("backing-store {backing}/$(touch${{IFS}}{canary})")),
    Case(
        "store-block-semicolon",
        "grammar",
        4,
        target("<backing-store {backing}/x;touch${{IFS}}{canary}>\n</backing-store>"),
    ),
    Case("acl-backtick", "grammar", 4, target("initiator-address 1.2.3.4`touch {canary}`")),
    Case(
        "initiator-name-shell",
        "grammar",
        4,
        target("initiator-name iqn.2026-01.x:y|touch${{IFS}}{canary}"),
    ),
    Case("chap-shell", "grammar", 4, target("incominguser u $(touch${{IFS}}{canary})x")),
    Case("chap-payload", "grammar", 4, target("outgoinguser u secretsecret,password=x")),
    Case(
        "discovery-shell",
        "grammar",
        3,
        HEAD + "incomingdiscoveryuser u sec;touch${{IFS}}{canary}\n",
    ),
    Case("store-payload", "grammar", 4, target("backing-store {backing}/a,path=/etc/shadow")),
    Case(
        "scsi-id-payload",
        "grammar",
        4,
        target("scsi_id x,path=/etc/shadow\nbacking-store {backing}/a.img"),
    ),
    Case("params-path", "grammar", 4, target("params path=/etc/shadow\nbacking-store {backing}/a")),
    Case("mode-page-payload", "grammar", 4, target("mode_page 8:0:1:0,path=/etc/shadow")),
    Case("param-shell", "grammar", 4, target("MaxConnections 1;touch${{IFS}}{canary}")),
    Case("option-minus", "grammar", 4, target("-C 0")),
    Case("path-key", "grammar", 4, target("path /etc/shadow")),
    Case("redirect-callback", "grammar", 4, target("RedirectCallback /bin/sh")),
    Case("ignore-errors", "grammar", 3, HEAD + "ignore-errors yes\n"),
    Case("bsopts", "grammar", 4, target("bsopts conf=/etc/ceph/ceph.conf")),
    Case("bs-type-sg", "grammar", 4, target("bs-type sg")),
    Case("unknown-key", "grammar", 4, target("maxconnections 4")),
    Case("control-port", "port", 3, HEAD + "control-port 0\n"),
    # --- what Config::General reads differently ------------------------------------------
    Case("continued-tag", "syntax", 3, HEAD + "<target \\\n  {iqn}:c>\n</target>\n"),
    Case("escape", "syntax", 3, HEAD + "note x\\#y\n"),
    Case("empty-block-blank", "syntax", 3, HEAD + "<target {iqn}:e/> \n"),
    Case("padded-tag", "syntax", 3, HEAD + "<target {iqn}:p >\n</target>\n"),
    Case("trailing-continuation", "syntax", 3, HEAD + "note x \\\n"),
    Case("ansi", "syntax", 3, HEAD + "note \x1b[2J\n"),
    Case("nul", "syntax", 3, (HEAD + "note a\0b\n").encode()),
    Case("bad-utf8", "syntax", 3, (HEAD + "note ").encode() + b"\xc3\x28\n"),
    Case("bom", "syntax", 1, "\ufeff" + HEAD),
    # --- stores ---------------------------------------------------------------------------
    Case("store-relative", "grammar", 4, target("backing-store disks/a.img")),
    Case("store-dotdot", "grammar", 4, target("backing-store {backing}/../../../etc/shadow")),
    Case("store-outside-roots", "store", 4, target("backing-store /var/lib/outside/a.img")),
    Case(
        "store-link-shadow",
        "store",
        4,
        target("backing-store {backing}/shadow"),
        _link("shadow", "/etc/shadow"),
    ),
    Case(
        "store-link-proc",
        "store",
        4,
        target("backing-store {backing}/kcore"),
        _link("kcore", "/proc/kcore"),
    ),
    Case(
        "store-chardev",
        "store",
        4,
        target("backing-store {backing}/null"),
        _link("null", "/dev/null"),
    ),
    Case("store-fifo", "store", 4, target("backing-store {backing}/fifo"), _fifo("fifo")),
    Case("store-directory", "store", 4, target("backing-store {backing}/adir"), _dir("adir")),
    Case(
        "store-nobody",
        "store",
        4,
        target("backing-store {backing}/theirs.img"),
        _file("theirs.img", uid=NOBODY),
    ),
    Case(
        "store-world-writable",
        "store",
        4,
        target("backing-store {backing}/open.img"),
        _file("open.img", mode=0o666),
    ),
    Case(
        "store-open-dir",
        "store",
        4,
        target("backing-store {backing}/shared/disk.img"),
        _dir("shared", mode=0o777),
    ),
    Case(
        "store-in-use",
        "store",
        4,
        target("backing-store {good}"),
        why="another instance already exports it",
    ),
    # --- includes and limits -------------------------------------------------------------
    Case("include-etc", "trust", 3, HEAD + "include /etc/shadow\n"),
    Case("include-escape", "trust", 3, HEAD + "include ../outside.conf\n"),
    Case("include-brace", "syntax", 3, HEAD + "include {{a,b}}.conf\n"),
    Case("include-cycle", "include", 3, HEAD + "include include-cycle.conf\n"),
    Case(
        "too-many-targets",
        "limit",
        None,
        HEAD + "".join(f"<target {{iqn}}:t{i}>\n</target>\n" for i in range(1001)),
    ),
    Case(
        "too-many-luns",
        "limit",
        None,
        target("".join(f"backing-store {{backing}}/lun{i}\n" for i in range(4097))),
    ),
]
