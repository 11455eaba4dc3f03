"""A client of one tgtd's control socket: a request in, tgtd's answer out, within a deadline."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tgtwatch.model.structs import ObservedTarget
from tgtwatch.tgt import ipc
from tgtwatch.tgt import ipc_ops as ops
from tgtwatch.tgt.show import (
    Portal,
    SystemInfo,
    SystemState,
    TargetInfo,
    observed_targets,
    parse_show_accounts,
    parse_show_params,
    parse_show_portals,
    parse_show_system,
    parse_show_targets,
)

# tgtd's and tgtadm's default (TGT_IPC_NAMESPACE); TGT_IPC_SOCKET overrides it in both.
DEFAULT_SOCKET_BASE = "/var/run/tgtd/socket"
DEFAULT_TIMEOUT_S = 30.0


def socket_path(control_port: int, env: Mapping[str, str] | None = None) -> str:
    """Where tgtd -C N listens: "$TGT_IPC_SOCKET.N", as tgtd and tgtadm compute it."""
    base = (os.environ if env is None else env).get("TGT_IPC_SOCKET") or DEFAULT_SOCKET_BASE
    return f"{base}.{control_port}"


def next_poll_delay(delay: float, elapsed: float, steady_s: float, max_delay_s: float) -> float:
    """The wait before the next poll of a starting tgtd: the same while `elapsed` is under
    `steady_s`, then doubled up to `max_delay_s`."""
    return delay if elapsed < steady_s else min(delay * 2, max_delay_s)


class IpcError(Exception):
    """tgtd could not be asked (no socket, timeout, closed without answering) or refused."""

    def __init__(self, request: ipc.Request, message: str, status: int | None = None) -> None:
        self.request = request
        self.status = status  # tgtd's answer; None: no answer at all
        super().__init__(f"{request.describe()}: {message}")

    @property
    def refused(self) -> bool:
        """tgtd answered, with an error."""
        return self.status is not None


def _recv_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(min(size - got, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _peer_pid(sock: socket.socket) -> int | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    pid = _UCRED.unpack(raw)[0]
    return pid if pid > 0 else None


@dataclass(frozen=True)
class TgtdSocket:
    """The tgtd listening on one control port, spoken to without any child process.

    tgtd accepts only a peer with its own uid and gid (root for tgtwatch's tgtds) and
    serves requests one at a time in its event loop; each call is one connection.
    """

    control_port: int
    timeout_s: float = DEFAULT_TIMEOUT_S
    env: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return socket_path(self.control_port, self.env)

    def call(self, request: ipc.Request) -> str:
        """Send one request; tgtd's text answer (often empty). IpcError when it fails."""
        return self.exchange(request)[0]

    def exchange(self, request: ipc.Request) -> tuple[str, int | None]:
        """call(), with the pid of the process that answered (SO_PEERCRED; None if the
        kernel does not say): who holds the socket, without scanning /proc."""
        try:
            data = request.encode()
        except ipc.RequestError as exc:
            raise IpcError(request, f"not sent: {exc}") from None
        deadline = time.monotonic() + self.timeout_s
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(self.path)
                pid = _peer_pid(sock)
                sock.sendall(data)
                header = _recv_exactly(sock, ipc.RESPONSE.size, deadline)
                if len(header) < ipc.RESPONSE.size:
                    # tgtd drops a peer of another uid/gid, or a payload above 8 KiB, unanswered.
                    raise IpcError(request, "tgtd closed the connection without answering")
                response = ipc.decode_response(header)
                if not response.ok:
                    raise IpcError(request, ipc.status_message(response.status), response.status)
                body = _recv_exactly(sock, response.body_length, deadline)
        except TimeoutError:
            raise IpcError(request, f"no answer within {self.timeout_s:g} s") from None
        except OSError as exc:
            raise IpcError(request, f"{self.path}: {exc.strerror or exc}") from None
        if len(body) < response.body_length:
            raise IpcError(request, "tgtd closed the connection in the middle of its answer")
        return ipc.decode_text(body), pid

    # -- liveness ------------------------------------------------------------------------------

    def answers(self) -> bool:
        try:
            self.call(ops.show_system())
        except IpcError:
            return False
        return True

    def wait_answering(
        self,
        timeout_s: float,
        *,
        alive: Callable[[], bool] | None = None,
        first_delay_s: float = 0.001,
        steady_s: float = 0.03,
        max_delay_s: float = 0.05,
    ) -> float:
        """Poll until tgtd answers; seconds it took. A stale socket file of an earlier tgtd
        refuses connections until the new one listens.

        Every `first_delay_s` for the first `steady_s` (a refused connect costs ~0.1 ms of
        CPU), then with backoff: tgtd listens 5-10 ms after its exec, and a backoff from
        the first poll (1, 2, 4, 8 ms) made a tgtd that listened at 7.1 ms answer at 15 ms.
        """
        started = time.monotonic()
        deadline = started + timeout_s
        delay = first_delay_s
        request = ops.show_system()
        last = "no attempt"
        while True:
            try:
                TgtdSocket(self.control_port, min(self.timeout_s, 1.0), self.env).call(request)
                return time.monotonic() - started
            except IpcError as exc:
                last = str(exc)
            if alive is not None and not alive():
                raise IpcError(request, f"tgtd exited before answering ({last})")
            now = time.monotonic()
            if now >= deadline:
                raise IpcError(request, f"no answer after {timeout_s:g} s ({last})")
            time.sleep(min(delay, deadline - now))
            delay = next_poll_delay(delay, now - started, steady_s, max_delay_s)

    # -- what tgtwatch reads -------------------------------------------------------------------

    def system(self) -> SystemInfo:
        return parse_show_system(self.call(ops.show_system()))

    def system_and_pid(self) -> tuple[SystemInfo, int | None]:
        """tgtd's system state and the pid of the tgtd that answered, in one request."""
        text, pid = self.exchange(ops.show_system())
        return parse_show_system(text), pid

    def portals(self) -> tuple[Portal, ...]:
        return parse_show_portals(self.call(ops.show_portals()))

    def show_targets_text(self) -> str:
        return self.call(ops.show_targets())

    def targets(self) -> tuple[ObservedTarget, ...]:
        return observed_targets(self.show_targets_text())

    def target_details(self) -> tuple[TargetInfo, ...]:
        return parse_show_targets(self.show_targets_text())

    def target_params(self, tid: int) -> dict[str, str]:
        """One target's iSCSI parameters (what a login negotiates from) and nop settings."""
        return parse_show_params(self.call(ops.show_target(tid)))

    def accounts(self) -> tuple[str, ...]:
        """Every account tgtd holds (bound or not); never a password: tgtd shows none."""
        return parse_show_accounts(self.call(ops.show_accounts()))

    def set_state(self, state: SystemState) -> None:
        self.call(ops.set_state(state.value))

    def delete_system(self) -> None:
        self.call(ops.delete_system())
