"""CHAP accounts on real tgtds: tgtd's own behaviour, the plans, tgt-admin as the oracle.

- tgtd 1.0.85 dies on `show` once an incoming account other than the last one of a target
  was unbound (a hole in its account array): why tgt/chap.py only unbinds from the end.
- Chains of account sets applied over the socket to one real tgtd: after each, tgtd is
  alive and shows exactly the bindings asked for.
- account_set() of the checked tree reads a config as tgt-admin does: `tgt-admin -p`
  prints the tgtadm commands it would run for the same file (users, secrets, bindings).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from tgtd_harness import RunningTgtd

from tgtwatch.config.accounts import Account, AccountSet, account_set
from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.model.tree import Direction
from tgtwatch.tgt import gateway as g
from tgtwatch.tgt import ipc_ops as ops
from tgtwatch.tgt.chap import DISCOVERY, AccountRecord, apply_accounts, read_view
from tgtwatch.tgt.ipc_client import IpcError, TgtdSocket

pytestmark = pytest.mark.integration

A = "iqn.2026-11.test.tgtwatch:chap-a"
B = "iqn.2026-11.test.tgtwatch:chap-b"
C = "iqn.2026-11.test.tgtwatch:chap-c"


def with_targets(tgtd: RunningTgtd, *names: str) -> TgtdSocket:
    client = TgtdSocket(tgtd.port, 10)
    for tid, name in enumerate(names, start=1):
        client.call(ops.new_target(tid, name))
    return client


def test_tgtd_dies_on_show_after_a_hole_in_a_targets_accounts(tgtd: RunningTgtd) -> None:
    """Pins tgt 1.0.85's behaviour (usr/target.c: the show loop dereferences the account
    of every id up to the count, and unbind leaves a zero id behind)."""
    client = with_targets(tgtd, A)
    for user in ("u1", "u2"):
        client.call(ops.new_account(user, f"{user}-secret-xyz"))
        client.call(ops.bind_account(user, 1))
    client.call(ops.unbind_account("u1", 1))  # not the last one: a hole
    with pytest.raises(IpcError):
        client.show_targets_text()
    assert tgtd.proc.wait(10) < 0, "tgtd survived: the workaround in tgt/chap.py may go"


def account(user: str, target: str | None, outgoing: bool = False, secret: str = "") -> Account:
    direction = Direction.OUTGOING if outgoing else Direction.INCOMING
    return Account(user, secret or f"{user}-secret-1234", direction, target)


CHAIN = [
    (account("d", None), account("a", A), account("b", A), account("c", A), account("m", A, True)),
    (account("d", None), account("b", A), account("c", A), account("m", B, True)),
    (account("c", A, secret="changed-secret"), account("c", B), account("o", None, True)),
    (account("a", C), account("c", A, secret="changed-secret"), account("p", None, True)),
    (),
]


def test_chains_of_account_sets_never_crash_tgtd(tgtd: RunningTgtd) -> None:
    client = with_targets(tgtd, A, B, C)
    record = AccountRecord()
    for accounts in CHAIN:
        desired = AccountSet(accounts, (A, B, C))
        record = apply_accounts(client, desired, record).record
        assert tgtd.alive()
        view = read_view(client)
        tids = {A: 1, B: 2, C: 3}
        for name, tid in tids.items():
            wanted = desired.bindings(name)
            assert set(view.slots[tid].incoming) == {a.user for a in wanted if not a.outgoing}
            assert view.slots[tid].outgoing == next((a.user for a in wanted if a.outgoing), None)
        discovery = {a.user for a in desired.bindings(None) if not a.outgoing}
        assert set(view.slots[DISCOVERY].incoming) == discovery
        assert set(view.existing) == set(desired.secrets())


# ---------------------------------------------------------------------------
# tgt-admin, the reference reader

ORACLE_CONF = f"""\
incomingdiscoveryuser disco discosecret-1
outgoingdiscoveryuser odisco odiscosecret-1
<target {B}>
    incominguser bob bobsecret-123
    incominguser alice alicesecret-1
    outgoinguser mutual mutualsecret-1
</target>
<target {A}>
    incominguser = alice alicesecret-1
    outgoinguser "mutual mutualsecret-1"
    initiator-address ALL
</target>
"""

_NEW = re.compile(r"--mode account --op new --user=(\S+) --password=(\S+)")
_BIND = re.compile(r"--mode account --op bind (?:--tid=(\d+) )?--user=(\S+)\s*(--outgoing)?")


def tgt_admin_accounts(
    tgtd: RunningTgtd, conf: Path
) -> tuple[dict[str, str], list[tuple[int, str, bool]]]:
    """What `tgt-admin -p -e` would create and bind: users with secrets, (tid, user, out)."""
    done = subprocess.run(
        [g.TgtPrograms().tgt_admin, "-C", str(tgtd.port), "-p", "-e", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    secrets = dict(_NEW.findall(done.stdout))
    binds = [(int(tid or -1), user, bool(out)) for tid, user, out in _BIND.findall(done.stdout)]
    return secrets, binds


def test_account_set_reads_what_tgt_admin_reads(tgtd: RunningTgtd, tmp_path: Path) -> None:
    conf = tmp_path / "chap.conf"
    conf.write_text(ORACLE_CONF)
    secrets, binds = tgt_admin_accounts(tgtd, conf)
    parsed = parse(conf, TrustedFiles(conf.parent, TrustPolicy(owner_uid=os.getuid())))
    assert parsed.problems == (), parsed.problems
    found = account_set(parsed.tree)
    assert found.secrets() == secrets
    # tgt-admin -e numbers targets in sorted order from 1; discovery is tid -1
    tids = {name: tid for tid, name in enumerate(sorted(found.targets), start=1)}
    ours = [(tids.get(a.target or "", -1), a.user, a.outgoing) for a in found.accounts]
    assert ours == binds
