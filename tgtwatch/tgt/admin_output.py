"""Parse what tgt-admin -v prints (added, removed, busy, errors) and summarize tool output."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class AdminProblemKind(enum.Enum):
    """Why a tgt-admin run did not do everything it was asked, whatever its exit code."""

    TGTADM_FAILED = "tgtadm_failed"  # "Command: ... exited with code: N." (tgt-admin stops there)
    TGTADM_ERROR = "tgtadm_error"  # "tgtadm: invalid request", "tgtadm: failed to send ..."
    DEVICE_SKIPPED = "device_skipped"  # a backing store missing or in use: target lacks a LUN
    CONFIG = "config"  # tgt-admin refused the config file ("... not allowed!", missing value)


@dataclass(frozen=True)
class AdminProblem:
    kind: AdminProblemKind
    message: str


@dataclass(frozen=True)
class BusyTarget:
    """A target tgt-admin left untouched because an initiator is connected."""

    tid: int
    name: str
    verb: str  # "updated" (--update) or "deleted" (-e removing a target absent from the file)


@dataclass(frozen=True)
class AdminReport:
    """What a tgt-admin run did, as far as its -v output tells."""

    busy: tuple[BusyTarget, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    problems: tuple[AdminProblem, ...] = ()

    @property
    def busy_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.busy)

    @property
    def ok(self) -> bool:
        """True when nothing signals a failure (busy targets are not failures: they are pending)."""
        return not self.problems


_BUSY_RE = re.compile(r"^# Target with tid (\d+) \((.*)\) is in use, it won't be (\w+)\.\s*$")
_ADDED_RE = re.compile(r"^# Adding target: (\S+)\s*$")
_REMOVED_RE = re.compile(r"^# Removing target: (\S+)\s*$")
_SKIPPED_MISSING_RE = re.compile(r"^# Skipping device: (.+?)\s*$")
_EXITED_RE = re.compile(r"^exited with code: (\d+)\.?\s*$")
_TOOL_ERROR_RE = re.compile(r"^(tgtadm|tgtd): (.+)$")
_CONFIG_ERROR_MARKERS = (
    "not allowed",
    "Check your config file",
    "has a missing value",
    "not found. Exiting",
    "can't continue",
    "Unknown option",
    "Unknown target",
)


def parse_admin_output(text: str) -> AdminReport:
    """Parse what `tgt-admin -v` printed: busy (pending) targets and hidden failures."""
    busy: list[BusyTarget] = []
    added: list[str] = []
    removed: list[str] = []
    problems: list[AdminProblem] = []
    lines = [line.rstrip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        stripped = line.strip()
        if m := _BUSY_RE.match(stripped):
            busy.append(BusyTarget(tid=int(m.group(1)), name=m.group(2), verb=m.group(3)))
        elif m := _ADDED_RE.match(stripped):
            added.append(m.group(1))
        elif m := _REMOVED_RE.match(stripped):
            removed.append(m.group(1))
        elif m := _SKIPPED_MISSING_RE.match(stripped):
            # tgt-admin says only this when the backing store does not exist
            message = f"skipped device {m.group(1)}: it does not exist"
            problems.append(AdminProblem(AdminProblemKind.DEVICE_SKIPPED, message))
        elif stripped.startswith("# Skipping device"):
            problems.append(AdminProblem(AdminProblemKind.DEVICE_SKIPPED, stripped.lstrip("# ")))
        elif m := _EXITED_RE.match(stripped):
            # tgt-admin prints "Command:", the command on the next line, then this one
            command = lines[i - 1].strip() if i >= 1 else ""
            message = f"{command} exited with code {m.group(1)}".strip()
            problems.append(AdminProblem(AdminProblemKind.TGTADM_FAILED, message))
        elif _TOOL_ERROR_RE.match(stripped):
            problems.append(AdminProblem(AdminProblemKind.TGTADM_ERROR, stripped))
        elif not stripped.startswith("#") and any(m in stripped for m in _CONFIG_ERROR_MARKERS):
            problems.append(AdminProblem(AdminProblemKind.CONFIG, stripped))
    return AdminReport(
        busy=tuple(busy), added=tuple(added), removed=tuple(removed), problems=tuple(problems)
    )


# ---------------------------------------------------------------------------
# one-line summaries of failed commands

# tgt-admin -v echoes `--mode account --op new --user=U --password=P`: outputs get logged.
_SECRET_RE = re.compile(r"(--password[= ]|\bpassword=)(\S+)")


def redact_secrets(text: str) -> str:
    """The text with CHAP passwords replaced by ***."""
    return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)


def error_summary(output: str, limit: int = 300) -> str:
    """The lines of a command's output an operator needs, on one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    report = parse_admin_output(output)
    picked = [p.message for p in report.problems]
    if not picked:
        picked = [line for line in lines if not line.startswith("#")][-2:] or lines[-1:]
    summary = "; ".join(dict.fromkeys(picked))
    if len(summary) > limit:
        summary = summary[: limit - 3] + "..."
    return summary


# ---------------------------------------------------------------------------
# /proc/PID/cmdline of a tgtd
