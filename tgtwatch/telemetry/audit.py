"""The audit trail: one redacted record per action, to the journal (or stderr) and a JSON file.

Where a record goes (``make_auditor``):
- the journal, through the native protocol, with ``SYSLOG_IDENTIFIER=tgtwatch``, a fixed
  ``MESSAGE_ID`` per action and the ``TGTWATCH_*`` fields of DESIGN.md's contract;
- stderr instead, one line per record, when the journal cannot take it (socket absent,
  refused, full...);
- besides, with ``audit_log`` set, one JSON object per line appended to that file (the
  contract's keys, plus ``output`` when the record has one).

Every sink sees the record after ``redact``: CHAP passwords never leave the process.
A sink that fails is reported on the error stream with the record itself, so a record
is never lost without a trace, and an audit failure never fails the action it records.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, TextIO

from tgtwatch.model.records import AuditAction, AuditRecord, AuditResult
from tgtwatch.telemetry.journal import Field, JournalClient, JournalError

SYSLOG_IDENTIFIER = "tgtwatch"


# `journalctl MESSAGE_ID=...` finds every record of one kind. Generated once, never change.
MESSAGE_IDS = MappingProxyType(
    {
        AuditAction.START: "9d8a997413a8401588a9e6b568a40628",
        AuditAction.RELOAD: "56c81f0159f645ffa25f652931014c63",
        AuditAction.DRAIN: "ab44d9e0257e45a4864748f62bc4cb4f",
        AuditAction.STOP: "e655c24f72cc4bc28a9875607b195951",
        AuditAction.REJECT: "701ebfd42169436d8258956f96650324",
        AuditAction.ADOPT: "4ef6735d556844fda8a25d3687fe0cd3",
        AuditAction.PENDING: "a67a1c20ad824a40bb9d015065e2bfbf",
        AuditAction.REPAIR: "aa45e414ecd74639831e776c5dfcebcc",
    }
)

# syslog priorities: a skipped action is normal but worth noticing (notice); partial means
# some targets still wait for their sessions to end (warning); failed needs an operator (err).
PRIORITIES = MappingProxyType(
    {
        AuditResult.OK: 6,
        AuditResult.SKIPPED: 5,
        AuditResult.PARTIAL: 4,
        AuditResult.FAILED: 3,
    }
)


# --- formats ------------------------------------------------------------------------------


def summary(record: AuditRecord) -> str:
    """The human sentence: journal MESSAGE."""
    where = f" port {record.port}" if record.port is not None else ""
    head = (
        f"{record.action.value} {record.instance}{where}: "
        f"{record.result.value} in {record.duration_ms} ms"
    )
    return f"{head}: {record.message}" if record.message else head


def journal_fields(record: AuditRecord) -> list[Field]:
    fields: list[Field] = [
        ("MESSAGE", summary(record)),
        ("PRIORITY", PRIORITIES[record.result]),
        ("MESSAGE_ID", MESSAGE_IDS[record.action]),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER),
        ("TGTWATCH_ACTION", record.action.value),
        ("TGTWATCH_INSTANCE", record.instance),
    ]
    if record.port is not None:
        fields.append(("TGTWATCH_PORT", record.port))
    fields += [
        ("TGTWATCH_CONFIG", record.config),
        ("TGTWATCH_SHA256", record.sha256),
        ("TGTWATCH_RESULT", record.result.value),
        ("TGTWATCH_DURATION_MS", record.duration_ms),
    ]
    if record.output:
        fields.append(("TGTWATCH_OUTPUT", record.output))
    return fields


def json_object(record: AuditRecord) -> dict[str, object]:
    """The audit_log object: the contract's keys, plus ``output`` only when non-empty."""
    obj: dict[str, object] = {
        "ts": record.ts,
        "action": record.action.value,
        "instance": record.instance,
        "port": record.port,
        "config": record.config,
        "sha256": record.sha256,
        "result": record.result.value,
        "duration_ms": record.duration_ms,
        "message": record.message,
    }
    if record.output:
        obj["output"] = record.output
    return obj


def json_line(record: AuditRecord) -> str:
    # json escapes every control character, so the object stays on one line.
    return json.dumps(json_object(record), ensure_ascii=False) + "\n"


def _escape(c: str) -> str:
    code = ord(c)
    if code > 0xFFFF:  # JSON spells astral characters as a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _logfmt(value: str) -> str:
    if value and all(c.isprintable() and not c.isspace() and c not in "\"'=\\" for c in value):
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    # json leaves U+2028, NEL, bidi controls, lone surrogates... raw: none may reach a
    # terminal or split the line for whoever reads stderr.
    return "".join(c if c.isprintable() else _escape(c) for c in quoted)


def stderr_line(record: AuditRecord) -> str:
    """One line, logfmt-style, same keys and order as the JSON object."""
    obj = json_object(record)
    parts = [
        f"{key}={_logfmt(value) if isinstance(value, str) else json.dumps(value)}"
        for key, value in obj.items()
    ]
    return f"{SYSLOG_IDENTIFIER} audit: {' '.join(parts)}\n"


# --- sinks --------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Writes one record or raises (OSError, ValueError for a closed stream...)."""

    def write(self, record: AuditRecord) -> None: ...


class StreamSink:
    """One line per record on a text stream (stderr), flushed at once."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, record: AuditRecord) -> None:
        self._stream.write(stderr_line(record.redacted()))
        self._stream.flush()


class JournalSink:
    """The journal; the fallback stream when journald does not take the entry."""

    def __init__(self, client: JournalClient, fallback: TextIO) -> None:
        self._client = client
        self._fallback = StreamSink(fallback)
        # Why records went to stderr, for `status` and metrics; the records say the rest.
        self.failures = 0
        self.last_error: JournalError | None = None

    def write(self, record: AuditRecord) -> None:
        try:
            self._client.send(journal_fields(record.redacted()))
        except JournalError as e:
            self.failures += 1
            self.last_error = e
            self._fallback.write(record)


class JsonLinesSink:
    """Appends one JSON object per line; opened per record, so log rotation needs no signal."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: AuditRecord) -> None:
        # Lone surrogates (undecodable file names) come out as JSON's own \\udcXX escapes.
        data = json_line(record.redacted()).encode("utf-8", "backslashreplace")
        # One O_APPEND write per record: lines from parallel lanes never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


# --- the auditor --------------------------------------------------------------------------


class Auditor:
    """Stamps, redacts and fans records out to its sinks; safe to share between lanes."""

    def __init__(
        self, sinks: Sequence[AuditSink], *, clock: Callable[[], float], errors: TextIO
    ) -> None:
        """``errors`` receives sink failures (stderr); ``clock`` stamps ``ts`` (time.time)."""
        self._sinks = tuple(sinks)
        self._clock = clock
        self._errors = errors
        self._lock = threading.Lock()
        self.lost = 0  # records even the error stream could not take

    def record(self, record: AuditRecord) -> None:
        """Redact and write ``record`` to every sink; a failing sink is reported, not raised."""
        record = record.redacted()
        with self._lock:
            for sink in self._sinks:
                try:
                    sink.write(record)
                except (OSError, ValueError) as e:
                    self._report(sink, e, record)

    def record_now(
        self,
        action: AuditAction,
        result: AuditResult,
        *,
        instance: str,
        port: int | None,
        config: str | os.PathLike[str],
        sha256: str = "",
        duration_ms: int = 0,
        message: str = "",
        output: str = "",
    ) -> AuditRecord:
        """Build a record stamped by the clock, record it; returns it as the sinks saw it."""
        stamped = AuditRecord(
            ts=self._clock(),
            action=action,
            instance=instance,
            port=port,
            config=os.fspath(config),
            sha256=sha256,
            result=result,
            duration_ms=duration_ms,
            message=message,
            output=output,
        )
        self.record(stamped)
        return stamped.redacted()

    def _report(self, sink: AuditSink, error: Exception, record: AuditRecord) -> None:
        try:
            self._errors.write(
                f"{SYSLOG_IDENTIFIER}: audit sink {_describe(sink)} failed: {error}\n"
            )
            self._errors.write(stderr_line(record))
            self._errors.flush()
        except (OSError, ValueError):
            # Nowhere left to write: count it so `status` can still say records were lost.
            self.lost += 1


def _describe(sink: AuditSink) -> str:
    path = getattr(sink, "path", None)
    return f"{type(sink).__name__}({path})" if path is not None else type(sink).__name__


def make_auditor(
    *,
    clock: Callable[[], float],
    stderr: TextIO,
    journal: JournalClient | None,
    audit_log: Path | None = None,
) -> Auditor:
    """The daemon's auditor: journal (stderr when it fails, or when there is none) + audit_log."""
    sinks: list[AuditSink] = [
        JournalSink(journal, stderr) if journal is not None else StreamSink(stderr)
    ]
    if audit_log is not None:
        sinks.append(JsonLinesSink(audit_log))
    return Auditor(sinks, clock=clock, errors=stderr)
