"""Which ports of a mapping changed since the last look, found by C-level passes over it."""

from __future__ import annotations

from collections.abc import Mapping


class Changes:
    """The keys whose value differs from the previous mapping seen (added and removed too).

    `by_identity`: values are frozen objects that stay the same object while unchanged
    (specs, applied entries, observed tgtds): compared by id(). Else by value (strings).
    Every pass over the whole mapping runs in C (dict(), map(), the items' symmetric
    difference); the Python-level work is per changed key, in the caller.
    """

    def __init__(self, *, by_identity: bool) -> None:
        self.by_identity = by_identity
        self._last: dict[int, object] = {}
        # The values last seen, held: an id is not reused while its object lives.
        self._held: list[object] = []

    def changed(self, mapping: Mapping[int, object]) -> set[int]:
        if self.by_identity:
            ids = map(id, mapping.values())
            now: dict[int, object] = dict(zip(mapping.keys(), ids, strict=True))
        else:
            now = dict(mapping)
        last = self._last
        if now == last:
            return set()
        self._last = now
        if self.by_identity:
            self._held = list(mapping.values())
        return {key for key, _ in now.items() ^ last.items()}

    def forget(self) -> None:
        """The next look reports every key of the mapping it is given."""
        self._last, self._held = {}, []
