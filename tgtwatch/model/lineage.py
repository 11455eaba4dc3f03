"""Which ports a state differs in from the few states it was made from, weakly held."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

# How many earlier states a state remembers: the loop's consumers hold the last state they
# saw, and between two cycles a few lanes end (each makes one applied state).
DEPTH = 4


@dataclass(frozen=True)
class Lineage:
    """For a state made from another by changing a few ports: per earlier state (a weak
    reference: a state never keeps another alive), the ports changed since it. A consumer
    holding an earlier state asks which ports to look at again instead of comparing every
    port; a state it does not find (made whole, or forgotten) means "compare them all"."""

    steps: tuple[tuple[weakref.ref[object], frozenset[int]], ...] = ()

    def after(self, base: object, ports: Iterable[int]) -> Lineage:
        """The lineage of a state made from `base` (whose lineage this is) by `ports`."""
        changed = frozenset(ports)
        steps = [(weakref.ref(base), changed)]
        for ref, since in self.steps[: DEPTH - 1]:
            if ref() is not None:
                steps.append((ref, since | changed))
        return Lineage(tuple(steps))

    def since(self, base: object) -> frozenset[int] | None:
        """The ports changed since `base`; None: not known (compare every port)."""
        for ref, changed in self.steps:
            if ref() is base:
                return changed
        return None


NO_LINEAGE = Lineage()


class Derived(Protocol):
    """A state that says what it was made from (Desired, Applied, Observed)."""

    @property
    def lineage(self) -> Lineage: ...


def changed_since(new: Derived, old: object) -> frozenset[int] | None:
    """The ports `new` changed since `old`: none when it is `old` itself; None: not known
    (made whole, or from a state its lineage no longer names)."""
    return frozenset() if new is old else new.lineage.since(old)
