"""Port conflicts, store claims and engine support, at the cost of the specs that can interact.

The whole passes (inventory.settle_conflicts, claims.check_stores, engine_supports) look at
every spec, every cycle: 12-20 ms of CPU at 500 instances on the loop's thread, for one
new file. Specs only interact through a port or a backing store they share, and nearly
none do: a spec alone on its port (not reserved) and alone on every store it names is
owned, and checked, by itself. Those answers are kept per spec (the same object while its
file is unchanged) and only the few specs that share something go through the whole
passes, together. The answer is the whole passes' own, problem order included (a property
test holds it to them: tests/unit/test_passes.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

from tgtwatch.config.claims import check_stores, rank
from tgtwatch.config.settings import EngineKind
from tgtwatch.config.stores import StoreFacts, StoreProbe
from tgtwatch.model.structs import Applied, InstanceKind, InstanceSpec, Problem

Judge = Callable[[str, StoreFacts], "str | None"]
Supports = Callable[[list[InstanceSpec], EngineKind], tuple[list[InstanceSpec], list[Problem]]]
Settle = Callable[
    [Sequence[InstanceSpec], dict[int, str], Applied],
    tuple[dict[int, InstanceSpec], list[Problem]],
]


@dataclass(frozen=True)
class _Alone:
    """One spec's stores as last looked at: what names them (each path, each resolved
    path) and its answer when nothing else shares them."""

    spec: InstanceSpec
    facts: tuple[StoreFacts, ...]
    tokens: tuple[str, ...]
    problems: tuple[Problem, ...]


class Passes:
    """Per spec, its stores' tokens and its answer alone. Owned by one InstanceCache: a
    full rescan (None) forgets it, as it forgets the store facts these are made from."""

    def __init__(self) -> None:
        self._alone: dict[int, _Alone] = {}  # by id(spec); the entry holds the spec
        # Kept with _alone, entry by entry: how often each token (a store's path, or where
        # it leads) is named, by which specs, the tokens named more than once, and the
        # specs refused even alone. A cycle then costs the specs that changed.
        self._counts: Counter[str] = Counter()
        self._by_token: dict[str, set[int]] = {}
        self._twice: set[str] = set()
        self._refusing: set[int] = set()
        # By id(spec): the spec, the engine and why that engine cannot load it.
        self._engine: dict[int, tuple[InstanceSpec, EngineKind, tuple[Problem, ...]]] = {}
        self._unsupported: set[int] = set()  # ids in _engine with problems
        self._engine_of: EngineKind | None = None  # the engine _engine was made for
        # Stores whose facts were looked up again since (the InstanceCache's probe adds
        # them): a spec kept from before that names one is made again from the new facts.
        self.refreshed: set[str] = set()

    def forget(self) -> None:
        self._alone.clear()
        self._counts.clear()
        self._by_token.clear()
        self._twice.clear()
        self._refusing.clear()
        self._engine.clear()
        self._unsupported.clear()
        self._engine_of = None
        self.refreshed.clear()

    def supported(
        self, specs: list[InstanceSpec], engine: EngineKind, supports: Supports
    ) -> tuple[list[InstanceSpec], list[Problem]]:
        """supports(specs, engine) (inventory.engine_supports: per spec, pure), each
        spec's answer kept while it is the same spec and engine. Costs the specs that
        changed: the rest is set arithmetic on ids (in C)."""
        memo = self._engine
        if engine is not self._engine_of:
            memo.clear()
            self._unsupported.clear()
            self._engine_of = engine
        ids = list(map(id, specs))
        by_id = dict(zip(ids, specs, strict=True))
        for key in memo.keys() - by_id.keys():
            del memo[key]
            self._unsupported.discard(key)
        # A kept id is the same spec: the memo holds it, so its id cannot be reused.
        for key in by_id.keys() - memo.keys():
            spec = by_id[key]
            memo[key] = (spec, engine, tuple(supports([spec], engine)[1]))
            if memo[key][2]:
                self._unsupported.add(key)
        if not self._unsupported:
            return list(specs), []
        problems: list[Problem] = []
        kept: list[InstanceSpec] = []
        for spec, key in zip(specs, ids, strict=True):
            if key in self._unsupported:
                problems.extend(memo[key][2])
            else:
                kept.append(spec)
        return kept, problems

    def _make(self, spec: InstanceSpec, probe: StoreProbe, judge: Judge) -> _Alone:
        luns = [lun for t in spec.tree.targets for lun in t.luns] if spec.tree else []
        facts = tuple(probe.facts(lun.path) for lun in luns)
        tokens: list[str] = []
        for lun, fact in zip(luns, facts, strict=True):
            tokens.append(lun.path)
            if fact.resolved and fact.resolved != lun.path:
                tokens.append(fact.resolved)
        problems: tuple[Problem, ...] = ()
        if spec.kind is InstanceKind.DROPIN and luns:
            # check_stores with this spec alone: only the roots and the owner can refuse it
            # (a store it names twice makes it share with itself: never alone).
            _, found = check_stores([spec], Applied(), probe, (), judge=judge)
            problems = tuple(found)
        return _Alone(spec, facts, tuple(tokens), problems)

    def _put(self, key: int, entry: _Alone) -> None:
        """Keep `entry` for the spec `key`, in place of the one it had."""
        self._drop(key)
        self._alone[key] = entry
        for token in entry.tokens:
            self._counts[token] += 1
            self._by_token.setdefault(token, set()).add(key)
            if self._counts[token] == 2:
                self._twice.add(token)
        if entry.problems:
            self._refusing.add(key)

    def _drop(self, key: int) -> None:
        entry = self._alone.pop(key, None)
        if entry is None:
            return
        for token in entry.tokens:
            self._counts[token] -= 1
            left = self._counts[token]
            if left == 1:
                self._twice.discard(token)
            elif left == 0:
                del self._counts[token]
                del self._by_token[token]
                continue
            self._by_token[token].discard(key)  # twice if the spec named it twice: harmless
        self._refusing.discard(key)

    def _current(
        self, everyone: list[InstanceSpec], probe: StoreProbe, judge: Judge
    ) -> dict[int, _Alone]:
        """Each spec's entry: kept while it is the same spec and its stores' facts were
        not looked up again; else made again. Costs the specs that changed: which ones is
        set arithmetic on ids (a kept id is the same spec: the entry holds it, so its id
        cannot be reused)."""
        alone = self._alone
        by_id = dict(zip(map(id, everyone), everyone, strict=True))
        for key in alone.keys() - by_id.keys():
            self._drop(key)  # the specs gone are forgotten
        for key in by_id.keys() - alone.keys():
            self._put(key, self._make(by_id[key], probe, judge))
        while self.refreshed:
            # The probe adds to this very set: copied, then emptied in place.
            paths = set(self.refreshed)
            self.refreshed.clear()
            for path in paths:
                for key in list(self._by_token.get(path, ())):
                    known = alone[key]
                    luns = (
                        [lun for t in known.spec.tree.targets for lun in t.luns]
                        if known.spec.tree
                        else []
                    )
                    if tuple(probe.facts(lun.path) for lun in luns) != known.facts:
                        self._put(key, self._make(known.spec, probe, judge))
        return alone

    def replace_alone(
        self,
        removed: Sequence[InstanceSpec],
        added: Sequence[InstanceSpec],
        probe: StoreProbe,
        judge: Judge,
    ) -> bool:
        """Put `added` in place of `removed` when each added spec is alone on every store
        it names (no spec kept, and no other added one, names it) and refused by none of
        its own: then the whole passes would give each its own answer, usable. True: kept
        so. False: nothing changed (the caller runs the whole passes). Costs these specs."""
        alone = self._alone
        if any(id(spec) not in alone for spec in removed):
            return False  # not made by the passes: their answer is theirs to give
        entries = [self._make(spec, probe, judge) for spec in added]
        leaving = Counter(token for spec in removed for token in alone[id(spec)].tokens)
        named: set[str] = set()
        for entry in entries:
            if entry.problems:
                return False
            for token in entry.tokens:
                if token in named or self._counts.get(token, 0) > leaving[token]:
                    return False
                named.add(token)
        for spec in removed:
            self._drop(id(spec))
        for spec, entry in zip(added, entries, strict=True):
            self._put(id(spec), entry)
        # The stores looked up again are these specs' alone: nothing kept is made again.
        self.refreshed -= named
        return True

    def settle_and_check(
        self,
        candidates: Sequence[InstanceSpec],
        default: InstanceSpec | None,
        reserved: dict[int, str],
        applied: Applied,
        probe: StoreProbe,
        judge: Judge,
        settle: Settle,
    ) -> tuple[list[InstanceSpec], list[Problem], list[Problem]]:
        """(usable specs, conflicts, store problems) as settle_conflicts then check_stores
        over the default and the port owners give them."""
        everyone = [*([default] if default is not None else []), *candidates]
        alone = self._current(everyone, probe, judge)
        # Nearly always every port is distinct and no store is named twice: then the whole
        # answer is made in C (sets, zip), and the specs that share go the whole way.
        ports = list(map(attrgetter("port"), candidates))
        distinct = set(ports)
        busy_ports = distinct & reserved.keys()
        if len(distinct) != len(ports):
            busy_ports |= {p for p, n in Counter(ports).items() if n > 1}
        sharing: set[int] = set().union(*(self._by_token[t] for t in self._twice))
        if busy_ports:
            contested = [s for s in candidates if s.port in busy_ports]
            owners, conflicts = settle(contested, reserved, applied)
            owners.update((s.port, s) for s in candidates if s.port not in busy_ports)
        else:
            owners, conflicts = dict(zip(ports, candidates, strict=True)), []
        wanted = [*([default] if default is not None else []), *owners.values()]
        refused: list[tuple[tuple[int, str], list[Problem]]] = []
        usable: list[InstanceSpec] = []
        lone = wanted
        if sharing:
            shared = [s for s in wanted if id(s) in sharing]
            usable, problems = check_stores(shared, applied, probe, (), judge=judge)
            by_config: dict[Path, list[Problem]] = {}
            for problem in problems:
                by_config.setdefault(problem.path, []).append(problem)
            refused = [
                (rank(s, applied), by_config[s.config]) for s in shared if s.config in by_config
            ]
            lone = [s for s in wanted if id(s) not in sharing]
        bad = self._refusing.intersection(map(id, lone))
        if bad:
            usable += [s for s in lone if id(s) not in bad]
            refused += [
                (rank(s, applied), list(alone[id(s)].problems)) for s in lone if id(s) in bad
            ]
        else:
            usable += lone
        refused.sort(key=lambda r: r[0])
        return usable, conflicts, [p for _, found in refused for p in found]
