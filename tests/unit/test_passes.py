"""The incremental inventory (config/passes.py through InstanceCache) always answers as the
full pass does: over random sequences of file adds, edits, breaks and deletes, with ports
and backing stores shared, reserved, refused, aliased, applied or not."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tgtwatch.config.incremental import InstanceCache
from tgtwatch.config.inventory import scan
from tgtwatch.config.settings import DefaultInstanceSettings, Settings
from tgtwatch.config.stores import StoreFacts
from tgtwatch.config.trust import TrustPolicy
from tgtwatch.config.unseen import is_below
from tgtwatch.model.structs import Applied, AppliedEntry, Desired

NAMES = ("a", "b", "c", "d", "e")
PORTS = (3260, 3261, 3262, 3263)  # 3260: the default instance's portal (reserved)
# /srv/l1 and /srv/l2 lead to /srv/s1 (one store by two paths); /opt is outside the roots.
STORES = ("/srv/s0", "/srv/s1", "/srv/s2", "/srv/l1", "/srv/l2", "/opt/x")
ALIASES = {"/srv/l1": "/srv/s1", "/srv/l2": "/srv/s1"}


class AliasProbe:
    """Every store absent; the links lead where its aliases say (ALIASES unless told)."""

    def __init__(self) -> None:
        self.aliases = dict(ALIASES)

    def facts(self, path: str) -> StoreFacts:
        return StoreFacts(resolved=self.aliases.get(path, path))


@dataclass(frozen=True)
class Write:
    name: str
    port: int
    luns: tuple[tuple[str, bool, bool], ...]  # store, allow-in-use, direct-store

    def text(self) -> str:
        body = f'SOCKET_OPTS="{self.port}"\n'
        for i, (store, share, direct) in enumerate(self.luns):
            body += f"<target iqn.2026-01.com.example:{self.name}{i}>\n"
            body += f"    {'direct-store' if direct else 'backing-store'} {store}\n"
            body += "    allow-in-use yes\n" if share else ""
            body += "</target>\n"
        return body


@dataclass(frozen=True)
class Step:
    kind: str  # write, break, delete, default, apply, directory
    write: Write | None = None
    name: str = ""


direct = st.sampled_from([False, False, False, True])  # the native engine refuses it
luns = st.lists(st.tuples(st.sampled_from(STORES), st.booleans(), direct), min_size=0, max_size=3)
writes = st.builds(Write, st.sampled_from(NAMES), st.sampled_from(PORTS), luns.map(tuple))
steps = st.one_of(
    st.builds(Step, st.just("write"), writes),
    st.builds(Step, st.just("write"), writes),
    st.builds(Step, st.just("break"), name=st.sampled_from(NAMES)),
    st.builds(Step, st.just("delete"), name=st.sampled_from(NAMES)),
    st.builds(Step, st.just("default"), writes),
    st.builds(Step, st.just("apply")),
    st.builds(Step, st.just("directory")),  # an event on instances_dir itself (moved, re-armed)
)


def applied_from(desired: Desired) -> Applied:
    return Applied(
        {
            port: AppliedEntry(spec.name, port, spec.config, spec.sha256, 0.0, kind=spec.kind)
            for port, spec in desired.instances.items()
        }
    )


def world(root: Path) -> Settings:
    tgt, instances = root / "tgt", root / "conf.d"
    for d in (tgt, instances):
        d.mkdir()
        d.chmod(0o755)
    root.chmod(0o755)
    return Settings(
        tgt_dir=tgt,
        instances_dir=instances,
        state_dir=root / "state",
        default_instance=DefaultInstanceSettings(manage=True),
        backing_store_roots=(Path("/srv"),),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=1, max_size=25))
@example(  # found by it: a store looked up again while the specs naming it were remade
    [
        Step("write", Write("b", 3260, (("/srv/s0", False, False), ("/srv/s1", False, False)))),
        Step("default", Write("a", 3260, (("/srv/s0", False, False),))),
        Step("write", Write("a", 3260, (("/srv/s0", False, False), ("/srv/s1", False, True)))),
    ]
)
def test_the_incremental_answer_is_the_full_passs(script: list[Step]) -> None:
    policy, probe = TrustPolicy(owner_uid=os.getuid()), AliasProbe()
    with tempfile.TemporaryDirectory() as tmp:
        s = world(Path(tmp))
        cache, applied = InstanceCache(), Applied()
        got = scan(s, applied, policy, probe, cache=cache)
        assert got == scan(s, applied, policy, probe)
        for step in script:
            if step.kind == "apply":
                applied = applied_from(got)
                changed: set[Path] = set()
            elif step.kind == "directory":
                changed = {s.instances_dir}
            elif step.kind == "default":
                assert step.write is not None
                path = s.default_config
                path.write_text(replace(step.write, port=3260).text().split("\n", 1)[1])
                changed = {path}
            else:
                path = s.instances_dir / f"{step.write.name if step.write else step.name}.conf"
                if step.kind == "delete":
                    path.unlink(missing_ok=True)
                else:
                    text = step.write.text() if step.write else "<target broken\n"
                    path.write_text(text)
                    path.chmod(0o644)
                changed = {path}
            got = scan(s, applied, policy, probe, cache=cache, changed=changed)
            full = scan(s, applied, policy, probe)
            assert got == full, step


def _scan_both(s: Settings, cache: InstanceCache, probe: AliasProbe, changed: set[Path]) -> Desired:
    policy = TrustPolicy(owner_uid=os.getuid())
    got = scan(s, Applied(), policy, probe, cache=cache, changed=changed)
    assert got == scan(s, Applied(), policy, probe)
    return got


def test_problems_keep_the_full_passs_order_across_shared_and_lone_specs(tmp_path: Path) -> None:
    s, cache, probe = world(tmp_path), InstanceCache(), AliasProbe()
    _scan_both(s, cache, probe, set())
    files = (
        Write("a", 3261, (("/srv/s1", False, False),)),
        Write("b", 3262, (("/opt/x", False, False),)),  # refused alone: outside the roots
        Write("c", 3263, (("/srv/l1", False, False),)),  # refused: a exports /srv/s1 already
    )
    for w in files:
        path = s.instances_dir / f"{w.name}.conf"
        path.write_text(w.text())
        path.chmod(0o644)
        got = _scan_both(s, cache, probe, {path})
    assert [p.path.name for p in got.problems] == ["b.conf", "c.conf"]


def test_a_store_looked_up_again_for_another_file_is_judged_again_for_a_lone_one(
    tmp_path: Path,
) -> None:
    s, cache, probe = world(tmp_path), InstanceCache(), AliasProbe()
    a, b = s.instances_dir / "a.conf", s.instances_dir / "b.conf"
    a.write_text(Write("a", 3261, (("/srv/l1", False, False),)).text())
    a.chmod(0o644)
    assert 3261 in _scan_both(s, cache, probe, {a}).instances
    # The link now leads under /etc; b names it too, so its facts are looked up again.
    probe.aliases["/srv/l1"] = "/etc/shadow"
    b.write_text(Write("b", 3262, (("/srv/l1", True, False),)).text())
    b.chmod(0o644)
    _scan_both(s, cache, probe, {b})
    b.unlink()
    got = _scan_both(s, cache, probe, {b})  # a is alone again: with the new facts
    assert not got.instances and "under /etc" in got.problems[0].message


parts = st.lists(st.sampled_from(["etc", "conf.d", "conf.dx", "a.conf", "x"]), max_size=4)


@given(parts, parts)
def test_is_below_is_the_lexical_parents_test(path: list[str], directory: list[str]) -> None:
    p, d = Path("/", *path), Path("/", *directory)
    assert is_below(p, d) == (d in p.parents)
