"""tgtwatch's own settings: the YAML keys of DESIGN.md, defaults, and errors that name the key."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tgtwatch.config.grammar import Limits
from tgtwatch.config.rules import Portal, RuleError, parse_portal
from tgtwatch.config.stores import DEFAULT_ROOTS

DEFAULT_SETTINGS_PATH = Path("/etc/tgtwatch/tgtwatch.yaml")


class BackendKind(enum.Enum):
    AUTO = "auto"
    SYSTEMD = "systemd"
    DIRECT = "direct"


class EngineKind(enum.Enum):
    """What loads an instance's targets into its tgtd."""

    NATIVE = "native"  # tgtwatch's own applier over tgtd's control socket: live changes
    TGT_ADMIN = "tgt-admin"  # `tgt-admin -e` / `--update ALL` on the canonical rendering


class DrainTimeoutPolicy(enum.Enum):
    WAIT = "wait"
    FORCE = "force"


class WatcherKind(enum.Enum):
    INOTIFY = "inotify"  # tgtwatch's own inotify reader (the default)
    WATCHDOG = "watchdog"  # accepted from older settings files: the same reader now
    PYINOTIFY = "pyinotify"


class SettingsError(Exception):
    """A settings file that cannot be used; one line naming the file and the key."""


@dataclass(frozen=True)
class DefaultInstanceSettings:
    manage: bool = True
    portal: Portal = Portal("0.0.0.0", 3260)
    control_port: int = 0


@dataclass(frozen=True)
class Settings:
    tgt_dir: Path = Path("/etc/tgt")
    instances_dir: Path = Path("/etc/mytgt/conf.d")
    backend: BackendKind = BackendKind.AUTO
    engine: EngineKind = EngineKind.NATIVE
    default_instance: DefaultInstanceSettings = field(default_factory=DefaultInstanceSettings)
    debounce_ms: int = 250
    # How long a vanished file's port keeps serving before its drain starts: tools delete
    # or move a file away and write it again within milliseconds; a real delete's drain
    # waits for its sessions anyway, so one second more is not felt.
    delete_grace_ms: int = 1000
    drain_timeout_s: float = 300.0
    on_drain_timeout: DrainTimeoutPolicy = DrainTimeoutPolicy.WAIT
    resync_interval_s: float = 300.0
    state_dir: Path = Path("/run/tgtwatch")
    watcher: WatcherKind = WatcherKind.INOTIFY
    audit_log: Path | None = None
    metrics_file: Path | None = None
    # tgt-admin takes ~30 ms a target: 30 s is about 1000 targets in one instance file.
    tool_timeout_s: float = 30.0
    backing_store_roots: tuple[Path, ...] = DEFAULT_ROOTS
    limits: Limits = field(default_factory=Limits)

    @property
    def default_config(self) -> Path:
        return self.tgt_dir / "targets.conf"


E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


class _Fields:
    """Typed access to one YAML mapping, each error naming the file and the dotted key."""

    def __init__(self, origin: Path, prefix: str, data: Mapping[str, Any], allowed: set[str]):
        self.origin = origin
        self.prefix = prefix
        self.data = data
        # key=str: YAML keys need not be strings (`1: x`), and mixed types do not sort.
        unknown = sorted(set(data) - allowed, key=str)
        if unknown:
            raise self.error(str(unknown[0]), f"unknown key (known: {', '.join(sorted(allowed))})")

    def error(self, key: str, message: str) -> SettingsError:
        return SettingsError(f"{self.origin}: {self.prefix}{key}: {message}")

    def get(self, key: str, default: T, convert: Callable[[Any], T]) -> T:
        if key not in self.data:
            return default
        try:
            return convert(self.data[key])
        except (TypeError, ValueError, RuleError) as exc:
            raise self.error(key, str(exc)) from None


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _number(minimum: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return float(value)

    return convert


def _int(minimum: int, maximum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected a whole number, got {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"must be within {minimum}-{maximum}, got {value}")
        return value

    return convert


def _enum(kind: type[E]) -> Callable[[Any], E]:
    def convert(value: Any) -> E:
        try:
            return kind(value)
        except ValueError:
            choices = " | ".join(str(m.value) for m in kind)
            raise ValueError(f"expected {choices}, got {value!r}") from None

    return convert


def _path(base: Path) -> Callable[[Any], Path]:
    def convert(value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise TypeError(f"expected a path, got {value!r}")
        return base / value  # an absolute value replaces base

    return convert


def _optional_path(base: Path) -> Callable[[Any], Path | None]:
    as_path = _path(base)
    return lambda value: None if value is None else as_path(value)


def _roots(value: Any) -> tuple[Path, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a list of absolute paths, got {value!r}")
    roots = []
    for item in value:
        path = Path(item)
        if not path.is_absolute() or ".." in path.parts or str(path) != os.path.normpath(item):
            raise ValueError(f"{item!r} is not a plain absolute path")
        roots.append(path)
    return tuple(roots)


def _limits(origin: Path, data: Any, top: _Fields) -> Limits:
    if not isinstance(data, Mapping):
        raise top.error("limits", "expected a mapping")
    names = {f.name for f in fields(Limits)}
    section = _Fields(origin, "limits.", data, names)
    defaults = Limits()
    return Limits(
        **{name: section.get(name, getattr(defaults, name), _int(1, 10**7)) for name in names}
    )


def _portal(value: Any) -> Portal:
    if not isinstance(value, str):
        raise TypeError(f"expected HOST:PORT, got {value!r}")
    return parse_portal(value)


def from_mapping(data: Any, origin: Path) -> Settings:
    """Settings from parsed YAML; relative paths resolve against the file's directory."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SettingsError(f"{origin}: expected a mapping of settings, got {type(data).__name__}")
    base = origin.parent
    defaults = Settings()
    top = _Fields(origin, "", data, {f.name for f in fields(Settings)})
    di_data = data.get("default_instance", {})
    if not isinstance(di_data, Mapping):
        raise top.error("default_instance", "expected a mapping")
    di = _Fields(origin, "default_instance.", di_data, {"manage", "portal", "control_port"})
    dd = defaults.default_instance
    return Settings(
        tgt_dir=top.get("tgt_dir", defaults.tgt_dir, _path(base)),
        instances_dir=top.get("instances_dir", defaults.instances_dir, _path(base)),
        backend=top.get("backend", defaults.backend, _enum(BackendKind)),
        engine=top.get("engine", defaults.engine, _enum(EngineKind)),
        default_instance=DefaultInstanceSettings(
            manage=di.get("manage", dd.manage, _bool),
            portal=di.get("portal", dd.portal, _portal),
            control_port=di.get("control_port", dd.control_port, _int(0, 65535)),
        ),
        debounce_ms=top.get("debounce_ms", defaults.debounce_ms, _int(0, 60_000)),
        delete_grace_ms=top.get("delete_grace_ms", defaults.delete_grace_ms, _int(0, 600_000)),
        drain_timeout_s=top.get("drain_timeout_s", defaults.drain_timeout_s, _number(0)),
        on_drain_timeout=top.get(
            "on_drain_timeout", defaults.on_drain_timeout, _enum(DrainTimeoutPolicy)
        ),
        resync_interval_s=top.get("resync_interval_s", defaults.resync_interval_s, _number(1)),
        state_dir=top.get("state_dir", defaults.state_dir, _path(base)),
        watcher=top.get("watcher", defaults.watcher, _enum(WatcherKind)),
        audit_log=top.get("audit_log", defaults.audit_log, _optional_path(base)),
        metrics_file=top.get("metrics_file", defaults.metrics_file, _optional_path(base)),
        tool_timeout_s=top.get("tool_timeout_s", defaults.tool_timeout_s, _number(1)),
        backing_store_roots=top.get("backing_store_roots", defaults.backing_store_roots, _roots),
        limits=_limits(origin, data.get("limits", {}), top),
    )


def load(path: Path, *, required: bool) -> Settings:
    """Read the settings file; a missing optional file means all defaults."""
    path = Path(os.path.abspath(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise SettingsError(f"{path}: no such settings file") from None
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SettingsError(f"{path}: not valid YAML{where}") from None
    return from_mapping(data, path)
