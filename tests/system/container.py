"""Boot a throw-away Debian bookworm with a real systemd under systemd-nspawn for system tests."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

CACHE_ROOT = Path(os.environ.get("TGTWATCH_SYSTEST_CACHE", "/var/cache/tgtwatch-systest"))
MIRROR = os.environ.get("TGTWATCH_SYSTEST_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# What the system tests need inside; procps for pgrep/ps in assertions; the Debian
# packages the .deb depends on (the container has no network: tests/system/test_deb.py
# installs the .deb with apt from what is already there).
PACKAGES: tuple[str, ...] = (
    "dbus",
    "iproute2",
    "procps",
    "python3",
    "python3-prometheus-client",
    "python3-venv",
    "python3-watchdog",
    "python3-yaml",
    "systemd",
    "systemd-sysv",
    "tgt",
)
# Masked: tgt.service would bind 3260 in the HOST's network namespace (the container shares it).
MASKED_UNITS: tuple[str, ...] = ("tgt.service", "console-getty.service")
# Enablement links removed: timers and jobs that only add noise, network traffic or dpkg locks.
DISABLED_LINKS: tuple[str, ...] = (
    "getty.target.wants/getty@tty1.service",
    "multi-user.target.wants/e2scrub_reap.service",
    "sysinit.target.wants/systemd-pstore.service",
    "timers.target.wants/apt-daily-upgrade.timer",
    "timers.target.wants/apt-daily.timer",
    "timers.target.wants/dpkg-db-backup.timer",
    "timers.target.wants/e2scrub_all.timer",
    "timers.target.wants/fstrim.timer",
)
SETUP_VERSION = 2  # bump whenever _customize() changes what it writes
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
REQUIRED_TOOLS: tuple[str, ...] = ("debootstrap", "systemd-nspawn", "nsenter")
CONTAINER_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_PAGER": "",
}


class ContainerError(RuntimeError):
    """The container could not be built, booted, reached or stopped."""


def missing_tools() -> list[str]:
    """Host programs the harness needs that are not on PATH."""
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
    max_interval: float = 0.5,
) -> T:
    """Poll `probe` with backoff until it returns something other than None/False."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ContainerError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, max_interval)


def port_is_free(port: int) -> bool:
    """True when nothing listens on TCP `port` on the host (so: nor in a container sharing it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- rootfs


@dataclass(frozen=True)
class RootfsSpec:
    """What the cached root file system is built from; its digest is the stamp."""

    suite: str = SUITE
    mirror: str = MIRROR
    variant: str = "minbase"
    packages: tuple[str, ...] = PACKAGES
    masked_units: tuple[str, ...] = MASKED_UNITS
    disabled_links: tuple[str, ...] = DISABLED_LINKS
    setup_version: int = SETUP_VERSION

    def stamp(self) -> str:
        """A digest that changes whenever anything that shapes the tree changes."""
        data = asdict(self)
        data["packages"] = sorted(self.packages)
        data.pop("mirror")  # the same packages from another mirror are the same tree
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _rm_tree(path: Path) -> None:
    """Remove a tree without ever crossing into another file system (a left-over /proc)."""
    if path.exists() or path.is_symlink():
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True)


def _customize(root: Path, spec: RootfsSpec) -> None:
    """Make the tree a quiet, safe test host: units masked, noise disabled, no fixed identity."""
    etc_systemd = root / "etc/systemd/system"
    for unit in spec.masked_units:
        link = etc_systemd / unit
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to("/dev/null")
        for wants in etc_systemd.glob(f"*.wants/{unit}"):
            wants.unlink()
    for rel in spec.disabled_links:
        with contextlib.suppress(FileNotFoundError):
            (etc_systemd / rel).unlink()
    # Bounded shutdown: tgtd ignores SIGTERM, so a forgotten tgtd would hold poweroff for 90 s.
    conf = root / "etc/systemd/system.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "50-tgtwatch-systest.conf").write_text("[Manager]\nDefaultTimeoutStopSec=10s\n")
    # nspawn names the host after --machine=; an empty machine-id gets a fresh one per boot.
    with contextlib.suppress(FileNotFoundError):
        (root / "etc/hostname").unlink()
    (root / "etc/machine-id").write_text("")
    # Keep the apt lists out of the tree: nothing inside may reach the network by accident.
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()


def ensure_rootfs(
    spec: RootfsSpec | None = None,
    *,
    cache_root: Path = CACHE_ROOT,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Return the cached root file system for `spec`, debootstrapping it when missing or stale.

    The tree lives at CACHE_ROOT/SUITE-STAMP (outside the repository; STAMP: the spec's
    digest, 12 hex digits), its stamp at CACHE_ROOT/SUITE-STAMP.stamp, and debootstrap's
    .deb cache at CACHE_ROOT/debs. Trees of different specs live side by side: building
    one never removes another that a running container may overlay. Concurrent callers
    serialise on CACHE_ROOT/.lock. The tree is only read afterwards (containers overlay it).
    """
    spec = spec or RootfsSpec()
    cache_root.mkdir(parents=True, exist_ok=True)
    want = spec.stamp()
    root = cache_root / f"{spec.suite}-{want[:12]}"
    stamp_path = cache_root / f"{root.name}.stamp"
    with (cache_root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (
            (root / "sbin/init").exists()
            and stamp_path.exists()
            and stamp_path.read_text().split("\n", 1)[0] == want
        ):
            return root
        new = cache_root / f"{root.name}.new"
        old = cache_root / f"{root.name}.old"
        _rm_tree(new)
        debs = cache_root / "debs"
        debs.mkdir(exist_ok=True)
        argv = [
            "debootstrap",
            f"--variant={spec.variant}",
            "--include=" + ",".join(sorted(spec.packages)),
            f"--cache-dir={debs}",
            spec.suite,
            str(new),
            spec.mirror,
        ]
        if log:
            log("building " + " ".join(argv))
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            _rm_tree(new)
            raise ContainerError(
                f"debootstrap failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        _customize(new, spec)
        stamp_path.unlink(missing_ok=True)
        if root.exists():
            root.rename(old)
        new.rename(root)
        _rm_tree(old)
        stamp_path.write_text(
            want + "\n" + json.dumps(asdict(spec), sort_keys=True, indent=1) + "\n"
        )
        if log:
            log(f"built {root} in {time.monotonic() - started:.1f}s")
        return root


# --------------------------------------------------------------------------- cgroups


@dataclass
class _Cgroups:
    """A private cgroup (in each hierarchy systemd-nspawn uses) holding nspawn and its container.

    Without it nspawn --keep-unit, on a host whose PID 1 is not systemd, creates `payload/` and
    `supervisor/` right in the caller's cgroup: two containers would collide, and nspawn
    leaves both behind. Here they land below our directory, which stop() removes.
    """

    dirs: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, name: str) -> _Cgroups:
        mounts: dict[str, Path] = {}
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            pre, _, post = line.partition(" - ")
            fstype, _, rest = post.partition(" ")
            options = rest.split(" ", 1)[1] if " " in rest else ""
            mountpoint = Path(pre.split(" ")[4])
            if fstype == "cgroup2":
                mounts.setdefault("", mountpoint)
            elif fstype == "cgroup" and "name=systemd" in options.split(","):
                mounts.setdefault("name=systemd", mountpoint)
        made = cls()
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers in mounts:
                d = mounts.pop(controllers) / path.lstrip("/") / name
                try:
                    d.mkdir()
                except OSError as exc:
                    for done in made.dirs:
                        done.rmdir()
                    raise ContainerError(f"cannot create cgroup {d}: {exc}") from exc
                made.dirs.append(d)
        if not made.dirs:
            raise ContainerError("no cgroup2 or name=systemd hierarchy found for the container")
        return made

    @property
    def unified(self) -> Path | None:
        return next((d for d in self.dirs if (d / "cgroup.kill").exists()), None)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for top in self.dirs:
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    found.update(int(p) for p in procs.read_text().split())
        return found

    def kill(self) -> None:
        """Last resort: SIGKILL everything below our directories (and only that)."""
        unified = self.unified
        if unified is not None:
            with contextlib.suppress(OSError):
                (unified / "cgroup.kill").write_text("1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float) -> None:
        wait_until(lambda: not self.pids(), timeout=timeout, what="the container's cgroup to empty")
        for top in self.dirs:
            if not top.exists():
                continue
            for dirpath, _dirs, _files in os.walk(top, topdown=False):
                Path(dirpath).rmdir()
        self.dirs.clear()


# --------------------------------------------------------------------------- container


def _pid_ns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


class Container:
    """One booted container: `systemd-nspawn --boot --volatile=overlay` on a read-only rootfs.

    Every change made inside lands in a tmpfs overlay that disappears at stop(). The container
    shares the host's network namespace: anything listening inside listens on the host.
    Long-running processes must be started through systemd inside (systemctl, systemd-run);
    run() is for commands that finish.
    """

    def __init__(
        self,
        rootfs: Path,
        *,
        name: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.rootfs = rootfs
        self.name = name or f"tgtwatch-systest-{uuid.uuid4().hex[:8]}"
        self.extra_args = tuple(extra_args)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}."))
        self.console_log = self.workdir / "console.log"
        self.boot_state: str | None = None
        self.timings: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._cgroups: _Cgroups | None = None
        self._pid1: int | None = None
        self._nsenter = shutil.which("nsenter") or "nsenter"

    # -- lifecycle

    def start(self, timeout: float = 90.0) -> None:
        """Boot and wait until `systemctl is-system-running` says running (or degraded)."""
        if self._proc is not None:
            raise ContainerError("already started")
        nspawn = shutil.which("systemd-nspawn")
        if nspawn is None:
            raise ContainerError("systemd-nspawn missing (apt-get install systemd-container)")
        started = time.monotonic()
        self._cgroups = _Cgroups.create(self.name)
        procs = " ".join(str(d / "cgroup.procs") for d in self._cgroups.dirs)
        argv = [
            "/bin/sh",
            "-c",
            'for p in $CGROUP_PROCS; do echo $$ > "$p" || exit 125; done; exec "$@"',
            "sh",
            nspawn,
            "--boot",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            "--link-journal=no",
            "--console=read-only",
            f"--machine={self.name}",
            "-D",
            str(self.rootfs),
            *self.extra_args,
        ]
        env = {**os.environ, "CGROUP_PROCS": procs, "SYSTEMD_COLORS": "0", "TERM": "dumb"}
        self._log = self.console_log.open("wb")
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            self._pid1 = wait_until(self._find_pid1, timeout=timeout, what="the container's PID 1")
            self.timings["pid1_s"] = time.monotonic() - started
            remaining = max(1.0, timeout - (time.monotonic() - started))
            self.boot_state = wait_until(
                self._system_state, timeout=remaining, what="systemctl is-system-running"
            )
            self.timings["boot_s"] = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    def _find_pid1(self) -> int | None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with {self._proc.returncode}:\n{self.console_tail()}"
            )
        own_ns = _pid_ns("self")
        nspawn_pid = str(self._proc.pid)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = stat.rsplit(")", 1)[1].split()[1]
                if ppid != nspawn_pid or _pid_ns(entry.name) == own_ns:
                    continue
                # Before exec() the inner child is still called systemd-nspawn.
                if (entry / "comm").read_text().strip() == "systemd":
                    return int(entry.name)
            except (OSError, IndexError):
                continue
        return None

    def _system_state(self) -> str | None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with {self._proc.returncode}:\n{self.console_tail()}"
            )
        done = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=30.0)
        state = done.stdout.strip()
        if state in ("running", "degraded"):
            return state
        if state in ("maintenance", "stopping"):
            raise ContainerError(f"container booted into {state}:\n{self.console_tail()}")
        return None  # offline / starting / bus not up yet: poll again

    def stop(self, timeout: float = 60.0) -> None:
        """Power off cleanly; then SIGTERM nspawn; kill our cgroup as a last resort.

        Leaves no process, cgroup or mount behind (nspawn's mounts live in its own namespace).
        """
        started = time.monotonic()
        deadline = started + timeout
        proc = self._proc
        try:
            if proc is not None and proc.poll() is None:
                if self._pid1 is not None:
                    with contextlib.suppress(ContainerError, subprocess.SubprocessError, OSError):
                        self.run(
                            ["systemctl", "--no-block", "poweroff"],
                            check=False,
                            timeout=min(10.0, max(1.0, timeout / 2)),
                        )
                if not self._wait_exit(proc, deadline - time.monotonic()):
                    proc.send_signal(signal.SIGTERM)  # nspawn: SIGRTMIN+3 to PID 1 = poweroff
                    if not self._wait_exit(proc, max(5.0, deadline - time.monotonic())):
                        if self._cgroups is not None:
                            self._cgroups.kill()
                        proc.kill()
                        proc.wait(timeout=10)
            elif proc is not None:
                proc.wait()
        finally:
            if self._cgroups is not None:
                try:
                    self._cgroups.remove(timeout=10.0)
                except ContainerError:
                    self._cgroups.kill()
                    self._cgroups.remove(timeout=10.0)
            # nspawn creates this on the host and, when /run is not a tmpfs, may refuse to
            # remove it ("Attempted to remove disk file system"): drop it if it is empty.
            with contextlib.suppress(OSError):
                (PROPAGATE_DIR / self.name).rmdir()
            if self._log is not None:
                self._log.close()
            self.timings["shutdown_s"] = time.monotonic() - started
            self._proc = None
            self._pid1 = None
            self._log = None
            self._cgroups = None

    @staticmethod
    def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
        try:
            proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return False
        return True

    def cleanup(self) -> None:
        """Stop if needed and remove the work directory (console log included)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Container:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection

    @property
    def pid1(self) -> int:
        """The container's PID 1 (systemd) as the host sees it."""
        if self._pid1 is None:
            raise ContainerError("container is not running")
        return self._pid1

    @property
    def nspawn_pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def cgroup_dirs(self) -> list[Path]:
        return [] if self._cgroups is None else list(self._cgroups.dirs)

    def console_tail(self, chars: int = 4000) -> str:
        try:
            return self.console_log.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    # -- commands

    def _argv(self, argv: Sequence[str], env: Mapping[str, str] | None) -> list[str]:
        merged = {**CONTAINER_ENV, **(env or {})}
        return [
            self._nsenter,
            f"--target={self.pid1}",
            "--all",
            "--root",
            "--wd",
            "--",
            "/usr/bin/env",
            "-i",
            *(f"{k}={v}" for k, v in merged.items()),
            *argv,
        ]

    def run_bytes(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside (all namespaces of PID 1, clean environment), bytes in and out."""
        done = subprocess.run(
            self._argv(argv, env),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise ContainerError(
                f"{' '.join(argv)} exited {done.returncode}:\n"
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
            )
        return done

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside and return its text output; raise on failure when `check`."""
        done = self.run_bytes(
            argv,
            input=None if input is None else input.encode(),
            check=check,
            timeout=timeout,
            env=env,
        )
        return subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a /bin/sh script inside (`set -eu` is prepended)."""
        return self.run(["/bin/sh", "-c", "set -eu\n" + script], check=check, timeout=timeout)

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout=120.0)

    def journal(self, *args: str) -> str:
        """`journalctl --no-pager -o short-monotonic ARGS` inside (e.g. `-u`, `tgtd@x`)."""
        return self.run(
            ["journalctl", "--no-pager", "-o", "short-monotonic", *args], check=False
        ).stdout

    # -- files

    def write_file(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Create or replace a file inside (parents created), owned by root."""
        payload = data.encode() if isinstance(data, str) else data
        self.run_bytes(
            [
                "/bin/sh",
                "-c",
                'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1"',
                "sh",
                path,
                f"{mode:o}",
            ],
            input=payload,
        )

    def read_file(self, path: str) -> bytes:
        return self.run_bytes(["cat", "--", path]).stdout

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy a host file or directory tree to `dest` inside, owned by root, modes kept."""

        def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            if src.is_dir():
                tar.add(src, arcname=".", filter=as_root)
                target = dest
            else:
                tar.add(src, arcname=Path(dest).name, filter=as_root)
                target = str(Path(dest).parent)
        self.run_bytes(
            ["/bin/sh", "-c", 'mkdir -p -- "$1" && tar -x -C "$1" -f -', "sh", target],
            input=buf.getvalue(),
        )


@contextlib.contextmanager
def booted(rootfs: Path | None = None, *, timeout: float = 90.0) -> Iterator[Container]:
    """`with booted() as c:` — ensure the rootfs, boot a container, always stop and clean it."""
    box = Container(rootfs or ensure_rootfs())
    try:
        box.start(timeout=timeout)
        yield box
    finally:
        box.cleanup()
