"""LUN numbers as tgt-admin gives them: explicit `lun N` first, then the smallest free. Pure.

tgt-admin (scripts/tgt-admin, make_key / find_next_lun / process_options):
- every explicit per-store `lun N` is reserved before any store is numbered, even the
  explicit number of a store that is later skipped;
- then all backing-stores, then all direct-stores, each group in Perl's string sort
  order (`sort keys`: byte order, so /dev/sd10 before /dev/sd2), and each present store
  without an explicit number takes the smallest number from 1 that no store holds;
- a store that is skipped (missing, or a directory) takes no number, so later ones move
  down: the numbering depends on which stores exist when it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class StoreRef:
    """One backing-store or direct-store of a target, as the config names it."""

    path: str
    direct: bool = False
    lun: int | None = None  # an explicit `lun N` in the store's block


def _byte_order(path: str) -> bytes:
    # Perl's default sort compares strings byte by byte.
    return path.encode("utf-8", "surrogateescape")


def number_luns(
    stores: Iterable[StoreRef], present: Callable[[str], bool] = lambda _path: True
) -> Mapping[str, int]:
    """Each present store's LUN number, keyed by path; skipped stores are absent."""
    listed = list(stores)
    taken = {s.lun for s in listed if s.lun is not None}
    numbers: dict[str, int] = {}
    for direct in (False, True):
        group = sorted((s for s in listed if s.direct is direct), key=lambda s: _byte_order(s.path))
        for store in group:
            if store.path in numbers or not present(store.path):
                continue
            if store.lun is not None:
                numbers[store.path] = store.lun
                continue
            lun = 1
            while lun in taken:
                lun += 1
            taken.add(lun)
            numbers[store.path] = lun
    return numbers
