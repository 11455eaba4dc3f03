"""The applied-state file: what tgtwatch last applied per port, written atomically."""

from __future__ import annotations

import bisect
import json
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _string
from pathlib import Path
from typing import Any

from tgtwatch.daemon.keyed import Changes
from tgtwatch.model.structs import Applied, AppliedEntry, InstanceKind

STATE_FILE = "applied.json"
FORMAT_VERSION = 1


class StateError(Exception):
    """The state file cannot be written; one line for the operator."""


def to_json(applied: Applied, failed: Mapping[int, str] | None = None) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "failed": {str(port): message for port, message in sorted((failed or {}).items())},
        "ports": {str(port): entry_json(e) for port, e in sorted(applied.entries.items())},
    }


def entry_json(e: AppliedEntry) -> dict[str, Any]:
    return {
        "name": e.name,
        "config": str(e.config),
        "sha256": e.sha256,
        "applied_at": e.applied_at,
        "pending": list(e.pending),
        "kind": e.kind.value,
        "targets": dict(e.targets),
    }


def encode(applied: Applied, failed: Mapping[int, str] | None = None) -> bytes:
    """The state file's bytes, made whole (StateEncoder makes the same per changed port)."""
    return json.dumps(to_json(applied, failed), indent=1, sort_keys=True).encode()


def _object(parts: Mapping[str, bytes], keys: list[str], depth: int) -> bytes:
    """A JSON object at `depth` as json.dumps(indent=1, sort_keys=True) lays it out, from
    its members' encoded parts (by key) and its keys, sorted."""
    if not parts:
        return b"{}"
    pad = b"\n" + b" " * (depth + 1)
    members = (b"," + pad).join(map(parts.__getitem__, keys))
    return b"".join((b"{", pad, members, b"\n", b" " * depth, b"}"))


class StateEncoder:
    """encode()'s very bytes, with each port's part encoded again only when its entry
    changed (another object), and the file joined from the parts in C.

    indent= runs json's pure-Python encoder: at 500 ports the whole file cost 2-3 ms of
    CPU per write, after every batch of lane ends. The layout is kept as it was, byte
    for byte (an operator reads and diffs this file; nothing parses it but from_json)."""

    def __init__(self) -> None:
        self._entries = Changes(by_identity=True)
        self._parts: dict[str, bytes] = {}  # str(port) -> its `"PORT": {...}` at depth 2
        self._keys: list[str] = []  # of _parts, sorted as sort_keys sorts them

    def encode(self, applied: Applied, failed: Mapping[int, str] | None = None) -> bytes:
        entries, parts, keys = applied.entries, self._parts, self._keys
        for port in self._entries.changed(entries):
            key, entry = str(port), entries.get(port)
            if key not in parts:
                bisect.insort(keys, key)
            if entry is None:
                del parts[key]
                keys.remove(key)
            else:
                text = json.dumps(entry_json(entry), indent=1, sort_keys=True)
                parts[key] = f'"{key}": {text}'.replace("\n", "\n  ").encode()
        # Few (ports whose start keeps failing): made whole.
        failures = {
            str(p): f'"{p}": {_string(message)}'.encode() for p, message in (failed or {}).items()
        }
        return b"".join(
            (
                b'{\n "failed": ',
                _object(failures, sorted(failures), 1),
                b',\n "ports": ',
                _object(parts, keys, 1),
                b',\n "version": %d\n}' % FORMAT_VERSION,
            )
        )


def from_json(data: Any) -> Applied:
    """Applied state from parsed JSON; raises ValueError (or KeyError/TypeError) when malformed."""
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise ValueError("not a tgtwatch state file of version 1")
    entries: dict[int, AppliedEntry] = {}
    for port_text, e in data["ports"].items():
        port = int(port_text)
        entries[port] = AppliedEntry(
            name=str(e["name"]),
            port=port,
            config=Path(e["config"]),
            sha256=str(e["sha256"]),
            applied_at=float(e["applied_at"]),
            pending=tuple(str(p) for p in e.get("pending", [])),
            kind=InstanceKind(e.get("kind", InstanceKind.DROPIN.value)),
            targets=tuple(sorted((str(k), str(v)) for k, v in e.get("targets", {}).items())),
        )
    return Applied(entries)


@dataclass(frozen=True)
class StateFile:
    """`applied.json` under state_dir."""

    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> tuple[Applied, str | None]:
        """The applied state, and a warning when it was missing-but-expected or corrupt.

        A corrupt file is treated as empty: the next cycle then reloads every running
        instance from its file (idempotent) instead of restarting it.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Applied(), None
        except (OSError, UnicodeDecodeError) as exc:
            return Applied(), f"{self.path}: cannot read the state ({exc}); starting from empty"
        try:
            return from_json(json.loads(text)), None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return Applied(), f"{self.path}: corrupt state ({exc}); starting from empty"

    def load_failed(self) -> dict[int, str]:
        """Ports whose start keeps failing, as the last tgtwatch to write the state saw them."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {int(port): str(message) for port, message in data.get("failed", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def save(self, applied: Applied, failed: Mapping[int, str] | None = None) -> None:
        self.save_bytes(encode(applied, failed))

    def save_bytes(self, body: bytes) -> None:
        """Temp file, fsync, rename, fsync the directory: never a half-written state."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".applied.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(body)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write the state: {exc.strerror}") from None


class StateWriter:
    """Writes the state file once for every change marked since the last write.

    Saved after every action, 500 starts wrote the whole file 500 times (14 % of the
    lanes' time). A crash before the write loses nothing: the next start adopts and
    reloads every running tgtd from its file.
    """

    def __init__(self, file: StateFile) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._unsaved = False
        self._encoder = StateEncoder()

    def mark(self) -> None:
        with self._lock:
            self._unsaved = True

    def take(self) -> bool:
        """Whether a change waits to be written (the caller writes it now)."""
        with self._lock:
            unsaved, self._unsaved = self._unsaved, False
        return unsaved

    def write(self, applied: Applied, failed: Mapping[int, str]) -> str | None:
        """None, or why it could not be written (marked again: tried at the next call)."""
        try:
            self.file.save_bytes(self._encoder.encode(applied, failed))
        except StateError as exc:
            self.mark()
            return str(exc)
        return None
