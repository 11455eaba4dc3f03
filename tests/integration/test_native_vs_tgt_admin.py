"""The native applier against the oracle: tgt-admin -e and the applier load the same config
into two real tgtds, which must then show the same state (targets, tids, LUNs with every
attribute, ACLs, per-target iSCSI parameters).

Configs are generated with hypothesis: several targets, backing stores with and without an
explicit `lun`, some missing (tgt-admin skips them), per-LUN params and write-cache,
iSCSI parameters, address and name ACLs or none (the implicit ALL).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tgt_state import tgtd_state
from tgtd_harness import RunningTgtd, TgtdFactory

from tests.every_key import every_key_text
from tgtwatch.config.render import render
from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.model.tree import WRITE_CACHE_OFF
from tgtwatch.tgt import gateway as g
from tgtwatch.tgt.applier import apply_changes
from tgtwatch.tgt.engine import RecordFile, load
from tgtwatch.tgt.instance_changes import instance_changes
from tgtwatch.tgt.ipc_client import TgtdSocket
from tgtwatch.tgt.luns import StoreRef, number_luns
from tgtwatch.tgt.records import InstanceRecord, LunRecord, TargetRecord

pytestmark = pytest.mark.integration

IQN = "iqn.2026-12.org.tgtwatch.diff"


@dataclass(frozen=True)
class Store:
    name: str
    lun: int | None
    present: bool
    params: tuple[tuple[str, str], ...]
    cache_off: bool


@dataclass(frozen=True)
class Target:
    suffix: str
    stores: tuple[Store, ...]
    params: tuple[tuple[str, str], ...] = ()
    addresses: tuple[str, ...] = ()
    initiators: tuple[str, ...] = ()

    def path(self, store: Store) -> str:
        # One target's stores only: the grammar refuses a path two targets export.
        return f"{self.suffix}-{store.name}"


@dataclass
class Model:
    targets: list[Target] = field(default_factory=list)

    def text(self, base: Path) -> str:
        lines: list[str] = []
        for t in self.targets:
            lines.append(f"<target {IQN}:{t.suffix}>")
            for s in t.stores:
                lines.append(f"    <backing-store {base / t.path(s)}>")
                if s.lun is not None:
                    lines.append(f"        lun {s.lun}")
                lines += [f"        {k} {v}" for k, v in s.params]
                if s.cache_off:
                    lines.append("        write-cache off")
                lines.append("    </backing-store>")
            lines += [f"    {k} {v}" for k, v in t.params]
            lines += [f"    initiator-address {a}" for a in t.addresses]
            lines += [f"    initiator-name {n}" for n in t.initiators]
            lines.append("</target>")
        return "\n".join(lines) + "\n"

    def record(self, base: Path) -> InstanceRecord:
        """What the config means, as the native applier's input (the test's own converter)."""
        targets: dict[str, tuple[int, TargetRecord]] = {}
        for t in self.targets:
            stores = {str(base / t.path(s)): s for s in t.stores}
            numbers = number_luns(
                [StoreRef(path, lun=s.lun) for path, s in stores.items()],
                {path for path, s in stores.items() if s.present}.__contains__,
            )
            luns = tuple(
                LunRecord(
                    number,
                    path,
                    params=(
                        *((("mode_page", str(WRITE_CACHE_OFF)),) if stores[path].cache_off else ()),
                        *sorted(stores[path].params),
                    ),
                )
                for path, number in sorted(numbers.items(), key=lambda e: e[1])
            )
            name = f"{IQN}:{t.suffix}"
            targets[name] = (
                0,
                TargetRecord(
                    name,
                    luns=luns,
                    addresses=tuple(sorted(t.addresses)) or ("ALL",),
                    initiators=tuple(sorted(t.initiators)),
                    params=tuple(sorted(t.params)),
                ),
            )
        return InstanceRecord(targets=targets)


lun_params = st.dictionaries(
    st.sampled_from(["vendor_id", "product_id", "product_rev", "scsi_sn", "readonly", "removable"]),
    st.sampled_from(["1", "0", "ACME", "X9"]),
    max_size=3,
).map(lambda d: tuple(sorted(d.items())))
stores = st.lists(
    st.builds(
        Store,
        name=st.sampled_from(["sd1", "sd2", "sd10", "vol-a", "vol.b"]),
        lun=st.none() | st.integers(1, 5),
        present=st.booleans(),
        params=lun_params,
        cache_off=st.booleans(),
    ),
    max_size=4,
    unique_by=lambda s: s.name,
)
iscsi_params = st.dictionaries(
    st.sampled_from(["MaxRecvDataSegmentLength", "HeaderDigest", "MaxConnections", "InitialR2T"]),
    st.sampled_from(["65536", "None", "1", "No"]),
    max_size=2,
).filter(lambda d: all(_valid(k, v) for k, v in d.items()))


def _valid(key: str, value: str) -> bool:
    allowed = {
        "MaxRecvDataSegmentLength": {"65536"},
        "HeaderDigest": {"None"},
        "MaxConnections": {"1"},
        "InitialR2T": {"No"},
    }
    return value in allowed[key]


targets = st.lists(
    st.builds(
        Target,
        suffix=st.sampled_from(["a", "b", "c10", "c2"]),
        stores=stores.map(tuple),
        params=iscsi_params.map(lambda d: tuple(sorted(d.items()))),
        addresses=st.lists(
            st.sampled_from(["10.0.0.1", "192.168.0.0/24", "ALL"]), unique=True, max_size=2
        ).map(tuple),
        initiators=st.lists(
            st.sampled_from(["iqn.1993-08.org.debian:01:aa", "iqn.x:b"]), unique=True, max_size=1
        ).map(tuple),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda t: t.suffix,
)


def _explicit_unique(model: Model) -> bool:
    # The grammar refuses two stores of one target with the same explicit number.
    for t in model.targets:
        numbers = [s.lun for s in t.stores if s.lun is not None]
        if len(numbers) != len(set(numbers)):
            return False
    return True


models = targets.map(lambda ts: Model(list(ts))).filter(_explicit_unique)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningTgtd, RunningTgtd]]:
    work = tmp_path_factory.mktemp("diff")
    factory = TgtdFactory(g.TgtPrograms(), work)
    try:
        yield factory.start(), factory.start()
    finally:
        factory.cleanup()


def tgt_admin_load(tgtd: RunningTgtd, config: Path) -> None:
    """The oracle: `tgt-admin -e` loads `config` into `tgtd`."""
    done = subprocess.run(
        ["tgt-admin", "-C", str(tgtd.port), "-e", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _clear(tgtd: RunningTgtd) -> None:
    for target in tgtd.control.target_details():
        subprocess.run(
            [
                "tgtadm",
                "-C",
                str(tgtd.port),
                "--op",
                "delete",
                "--mode",
                "target",
                "--force",
                "--tid",
                str(target.tid),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(model=models)
def test_native_start_matches_tgt_admin(
    pair: tuple[RunningTgtd, RunningTgtd], tmp_path: Path, model: Model
) -> None:
    oracle, native = pair
    _clear(oracle)
    _clear(native)
    for t in model.targets:
        for s in t.stores:
            path = tmp_path / t.path(s)
            if s.present:
                with path.open("ab") as f:
                    f.truncate(1 << 20)
            else:
                path.unlink(missing_ok=True)
    config = tmp_path / "diff.conf"
    config.write_text(model.text(tmp_path))
    tgt_admin_load(oracle, config)
    changes = instance_changes(InstanceRecord(), model.record(tmp_path))
    report = apply_changes(TgtdSocket(native.port), InstanceRecord(), changes)
    assert report.ok, report.error
    assert tgtd_state(native.port) == tgtd_state(oracle.port)


def _without_tids(state: dict[str, object]) -> dict[str, object]:
    """tids (and the SCSI ID and serial tgtd derives from them) depend on the edit history."""
    targets = state["targets"]
    assert isinstance(targets, dict)
    kept: dict[str, object] = {}
    for name, target in targets.items():
        luns = {
            n: {k: v for k, v in lun.items() if k not in ("SCSI ID", "SCSI SN")}
            for n, lun in target["luns"].items()
        }
        kept[name] = {**target, "tid": None, "luns": luns}
    return {**state, "targets": kept}


def _materialize(model: Model, base: Path) -> None:
    for t in model.targets:
        for s in t.stores:
            path = base / t.path(s)
            if s.present:
                with path.open("ab") as f:
                    f.truncate(1 << 20)
            else:
                path.unlink(missing_ok=True)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chain=st.lists(models, min_size=2, max_size=4))
def test_native_edit_chain_ends_where_tgt_admin_starts(
    pair: tuple[RunningTgtd, RunningTgtd], tmp_path: Path, chain: list[Model]
) -> None:
    oracle, native = pair
    _clear(oracle)
    _clear(native)
    # The oracle first: tgt-admin skips a store another process holds open (lsof), and the
    # native tgtd would hold them all. tgtd itself opens a store without such a check.
    last = chain[-1]
    _materialize(last, tmp_path)
    config = tmp_path / "last.conf"
    config.write_text(last.text(tmp_path))
    tgt_admin_load(oracle, config)
    client = TgtdSocket(native.port)
    record = InstanceRecord()
    for model in chain:
        _materialize(model, tmp_path)
        changes = instance_changes(record, model.record(tmp_path), tids_in_use=())
        report = apply_changes(client, record, changes)
        assert report.ok, report.error
        assert not report.waiting
        record = report.record
    assert _without_tids(tgtd_state(native.port)) == _without_tids(tgtd_state(oracle.port))


def _inquiry(port: int, target: str, lun: int, *args: str) -> str:
    done = subprocess.run(
        ["iscsi-inq", *args, f"iscsi://127.0.0.1:{port}/{target}/{lun}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_key_loads_as_tgt_admin_loads_it(
    pair: tuple[RunningTgtd, RunningTgtd], tmp_path: Path
) -> None:
    """The file with every documented key (but direct-store, which the native engine
    refuses at check time): what show can see is compared, then what only an initiator
    can see (INQUIRY: vendor, product, revision; the unit serial page)."""
    oracle, native = pair
    _clear(oracle)
    _clear(native)
    stores = [tmp_path / name for name in ("a.img", "b.img", "c.img")]
    for store in stores:
        with store.open("ab") as f:
            f.truncate(1 << 20)
    target = f"{IQN}:every-key"
    text = every_key_text(native.port, target, *(str(s) for s in stores))
    text = text.replace(
        f"    direct-store {stores[2]}\n",
        f"    <backing-store {stores[2]}>\n    </backing-store>\n",
    )
    config = tmp_path / "every.conf"
    config.write_text(text)
    parsed = parse(config, TrustedFiles(tmp_path, TrustPolicy(owner_uid=os.getuid())))
    assert parsed.tree is not None, parsed.problems
    rendered = tmp_path / "rendered.conf"
    rendered.write_text(render(parsed.tree, accounts=False))
    tgt_admin_load(oracle, rendered)
    report = load(TgtdSocket(native.port), parsed.tree, RecordFile(tmp_path / "record.json"))
    assert report.ok, report.error
    assert tgtd_state(native.port) == tgtd_state(oracle.port)
    # Both tgtds admit 127.0.0.1 only by address; no account is bound in either.
    for lun in (1, 2, 5):
        assert _inquiry(native.port, target, lun) == _inquiry(oracle.port, target, lun), lun
        serial = ("-e", "1", "-c", "0x80")
        assert _inquiry(native.port, target, lun, *serial) == _inquiry(
            oracle.port, target, lun, *serial
        ), lun
