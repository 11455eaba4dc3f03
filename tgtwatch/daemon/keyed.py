"""Which ports of a mapping changed since the last look, found by C-level passes over it."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress, repeat
from operator import is_not, ne

_ABSENT = object()


class Changes:
    """The keys whose value differs from the previous mapping seen (added and removed too).

    `by_identity`: values are frozen objects that stay the same object while unchanged
    (specs, applied entries, observed tgtds), compared with `is`; the mapping itself is
    never changed in place (it is held by a frozen Desired, Applied or Observed), so the
    same mapping again is no change at all. Else values are compared by value (strings,
    flags), and the mapping may be one changed in place.
    Every pass over a whole mapping runs in C (map(), compress(), set difference); the
    Python-level work is per changed key, in the caller.
    """

    def __init__(self, *, by_identity: bool) -> None:
        self.by_identity = by_identity
        self._differ = is_not if by_identity else ne
        self._source: Mapping[int, object] | None = None
        self._last: dict[int, object] = {}  # a copy: holds the values compared with

    def changed(self, mapping: Mapping[int, object]) -> set[int]:
        last = self._last
        if (self.by_identity and mapping is self._source) or (not mapping and not last):
            return set()
        olds = map(last.get, mapping.keys(), repeat(_ABSENT))
        found = set(compress(mapping.keys(), map(self._differ, mapping.values(), olds)))
        if found or len(mapping) != len(last):  # else no key of `last` can be gone
            found |= last.keys() - mapping.keys()
        self._source, self._last = mapping, dict(mapping)
        return found

    def forget(self) -> None:
        """The next look reports every key of the mapping it is given."""
        self._source, self._last = None, {}
