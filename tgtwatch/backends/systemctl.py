"""The only code that runs systemctl and journalctl (the systemd backend's, and tests')."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass

from tgtwatch.tgt.gateway import child_env

SYSTEMCTL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SystemctlError(Exception):
    argv: tuple[str, ...]
    returncode: int | None
    output: str

    def __str__(self) -> str:
        last = self.output.strip().splitlines()[-1:] or [""]
        return f"{' '.join(self.argv)}: exit {self.returncode}: {last[0]}"


@dataclass(frozen=True)
class Systemctl:
    """The only code that runs systemctl and journalctl."""

    program: str = "systemctl"
    timeout_s: float = SYSTEMCTL_TIMEOUT_S

    def run(self, *args: str) -> str:
        argv = (self.program, *args)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=child_env(os.environ),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SystemctlError(argv, None, str(exc)) from None
        if done.returncode != 0:
            raise SystemctlError(argv, done.returncode, done.stdout + done.stderr)
        return done.stdout

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("show", *(f"--property={p}" for p in props), unit)
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    def activating(self) -> set[str]:
        out = self.run(
            "list-units",
            "--type=service",
            "--state=activating",
            "--plain",
            "--no-legend",
            "tgtd@*",
        )
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def journal_tail(self, unit: str, lines: int = 20) -> str:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            return subprocess.run(
                ("journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"),
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
        return ""
