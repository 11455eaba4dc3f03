"""What the daemon publishes after every cycle (state_dir/status.json), as data and JSON. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgtwatch.model.structs import Problem, Rule

PUBLISHED_FORMAT = 1


@dataclass(frozen=True)
class PublishedInstance:
    """One port as the daemon sees it at the end of a cycle or of an action."""

    name: str
    port: int
    config: str
    state: str  # an InstanceState value
    pid: int | None
    message: str = ""
    pending: tuple[str, ...] = ()
    seen_sha256: str = ""  # the file's digest in the daemon's latest scan ("": no file wants it)
    applied_sha256: str = ""  # the digest the running tgtd was last given ("": none)
    applied_targets: tuple[str, ...] = ()  # targets loaded by that action
    attempt_sha256: str = ""  # the digest of the last start or reload the daemon began
    busy: bool = False  # an action runs on this port right now
    deferred: str = ""  # why the daemon holds its next action back, e.g. a retry's backoff
    failure: str = ""  # a start or reload that failed, or a tgtd that keeps dying

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "config": self.config,
            "state": self.state,
            "pid": self.pid,
            "message": self.message,
            "pending": list(self.pending),
            "seen_sha256": self.seen_sha256,
            "applied_sha256": self.applied_sha256,
            "applied_targets": list(self.applied_targets),
            "attempt_sha256": self.attempt_sha256,
            "busy": self.busy,
            "deferred": self.deferred,
            "failure": self.failure,
        }

    @classmethod
    def from_json(cls, data: Any) -> PublishedInstance:
        pid = data["pid"]
        return cls(
            name=str(data["name"]),
            port=int(data["port"]),
            config=str(data["config"]),
            state=str(data["state"]),
            pid=None if pid is None else int(pid),
            message=str(data.get("message", "")),
            pending=tuple(str(t) for t in data.get("pending", [])),
            seen_sha256=str(data.get("seen_sha256", "")),
            applied_sha256=str(data.get("applied_sha256", "")),
            applied_targets=tuple(str(t) for t in data.get("applied_targets", [])),
            attempt_sha256=str(data.get("attempt_sha256", "")),
            busy=bool(data.get("busy", False)),
            deferred=str(data.get("deferred", "")),
            failure=str(data.get("failure", "")),
        )


@dataclass(frozen=True)
class Published:
    """The whole publication: who wrote it, when, every port and every refused file."""

    pid: int
    written_at: float  # Unix time
    instances: tuple[PublishedInstance, ...] = ()
    problems: tuple[Problem, ...] = ()

    def instance(self, port: int, config: Path) -> PublishedInstance | None:
        return next((i for i in self.instances if i.port == port and i.config == str(config)), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PUBLISHED_FORMAT,
            "pid": self.pid,
            "written_at": self.written_at,
            "instances": [i.to_json() for i in self.instances],
            "problems": problems_json(self.problems),
        }

    @classmethod
    def from_json(cls, data: Any) -> Published:
        """Raises ValueError (or KeyError/TypeError) when the data is not a publication."""
        if not isinstance(data, dict) or data.get("version") != PUBLISHED_FORMAT:
            raise ValueError(f"not a tgtwatch publication of version {PUBLISHED_FORMAT}")
        return cls(
            pid=int(data["pid"]),
            written_at=float(data["written_at"]),
            instances=tuple(PublishedInstance.from_json(i) for i in data["instances"]),
            problems=tuple(
                Problem(
                    Path(p["path"]),
                    Rule(p["rule"]),
                    str(p["message"]),
                    None if p.get("line") is None else int(p["line"]),
                )
                for p in data["problems"]
            ),
        )


def problems_json(problems: tuple[Problem, ...]) -> list[dict[str, Any]]:
    return [
        {"path": str(p.path), "line": p.line, "rule": p.rule.value, "message": p.message}
        for p in problems
    ]
