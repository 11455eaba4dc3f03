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
from itertools import chain
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
        self._by_store: dict[str, set[int]] = {}  # lun path -> ids of specs naming it
        # By id(spec): the spec, the engine and why that engine cannot load it.
        self._engine: dict[int, tuple[InstanceSpec, EngineKind, tuple[Problem, ...]]] = {}
        # Stores whose facts were looked up again since (the InstanceCache's probe adds
        # them): a spec kept from before that names one is made again from the new facts.
        self.refreshed: set[str] = set()

    def forget(self) -> None:
        self._alone.clear()
        self._engine.clear()
        self._by_store.clear()
        self.refreshed.clear()

    def supported(
        self, specs: list[InstanceSpec], engine: EngineKind, supports: Supports
    ) -> tuple[list[InstanceSpec], list[Problem]]:
        """supports(specs, engine) (inventory.engine_supports: per spec, pure), each
        spec's answer kept while it is the same spec and engine."""
        memo = self._engine
        kept: list[InstanceSpec] = []
        problems: list[Problem] = []
        answers: dict[int, tuple[InstanceSpec, EngineKind, tuple[Problem, ...]]] = {}
        for spec in specs:
            known = memo.get(id(spec))
            if known is None or known[0] is not spec or known[1] is not engine:
                known = (spec, engine, tuple(supports([spec], engine)[1]))
            answers[id(spec)] = known
            if known[2]:
                problems.extend(known[2])
            else:
                kept.append(spec)
        self._engine = answers
        return kept, problems

    def _make(self, spec: InstanceSpec, probe: StoreProbe, judge: Judge) -> _Alone:
        luns = [lun for t in spec.tree.targets for lun in t.luns] if spec.tree else []
        facts = tuple(probe.facts(lun.path) for lun in luns)
        tokens: list[str] = []
        for lun, fact in zip(luns, facts, strict=True):
            tokens.append(lun.path)
            if fact.resolved and fact.resolved != lun.path:
                tokens.append(fact.resolved)
            self._by_store.setdefault(lun.path, set()).add(id(spec))
        problems: tuple[Problem, ...] = ()
        if spec.kind is InstanceKind.DROPIN and luns:
            # check_stores with this spec alone: only the roots and the owner can refuse it
            # (a store it names twice makes it share with itself: never alone).
            _, found = check_stores([spec], Applied(), probe, (), judge=judge)
            problems = tuple(found)
        return _Alone(spec, facts, tuple(tokens), problems)

    def _current(
        self, everyone: list[InstanceSpec], probe: StoreProbe, judge: Judge
    ) -> dict[int, _Alone]:
        """Each spec's entry: kept while it is the same spec and its stores' facts were
        not looked up again; else made again (costs the specs that changed)."""
        memo = self._alone
        alone: dict[int, _Alone] = {}
        for spec in everyone:
            known = memo.get(id(spec))
            alone[id(spec)] = (
                known
                if known is not None and known.spec is spec
                else self._make(spec, probe, judge)
            )
        while self.refreshed:
            # The probe adds to this very set: copied, then emptied in place.
            paths = set(self.refreshed)
            self.refreshed.clear()
            for path in paths:
                for key in self._by_store.get(path, set()) & alone.keys():
                    known = alone[key]
                    luns = (
                        [lun for t in known.spec.tree.targets for lun in t.luns]
                        if known.spec.tree
                        else []
                    )
                    if tuple(probe.facts(lun.path) for lun in luns) != known.facts:
                        alone[key] = self._make(known.spec, probe, judge)
        if sum(len(v) for v in self._by_store.values()) > 4 * len(alone) + 64:
            self._by_store = {}
            for key, known in alone.items():
                for t in known.spec.tree.targets if known.spec.tree else ():
                    for lun in t.luns:
                        self._by_store.setdefault(lun.path, set()).add(key)
        self._alone = alone  # the specs gone are forgotten
        return alone

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
        # Counted in C (map, chain): these run over every spec, every cycle.
        ports = Counter(map(attrgetter("port"), candidates))
        tokens = Counter(chain.from_iterable(map(attrgetter("tokens"), alone.values())))
        # Specs naming a store (a path, or where it leads) that another, or itself, names.
        twice = {t for t, n in tokens.items() if n > 1}
        sharing = (
            {i for i, a in alone.items() if not twice.isdisjoint(a.tokens)} if twice else set()
        )
        busy_ports = {p for p, n in ports.items() if n > 1} | (ports.keys() & reserved.keys())
        contested = [s for s in candidates if s.port in busy_ports]
        owners, conflicts = settle(contested, reserved, applied)
        owners.update((s.port, s) for s in candidates if s.port not in busy_ports)
        wanted = [*([default] if default is not None else []), *owners.values()]
        shared = [s for s in wanted if id(s) in sharing]
        usable, problems = check_stores(shared, applied, probe, (), judge=judge)
        by_config: dict[Path, list[Problem]] = {}
        for problem in problems:
            by_config.setdefault(problem.path, []).append(problem)
        refused: list[tuple[tuple[int, str], list[Problem]]] = [
            (rank(s, applied), by_config[s.config]) for s in shared if s.config in by_config
        ]
        lone = [(s, alone[id(s)].problems) for s in wanted if id(s) not in sharing]
        usable += [s for s, mine in lone if not mine]
        refused += [(rank(s, applied), list(mine)) for s, mine in lone if mine]
        refused.sort(key=lambda r: r[0])
        return usable, conflicts, [p for _, found in refused for p in found]
