"""LUN numbering: tgt-admin's rules, exhaustively on small inputs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.tgt.luns import StoreRef, number_luns


def test_sorted_path_order_not_file_order() -> None:
    stores = [StoreRef("/dev/sd2"), StoreRef("/dev/sd10"), StoreRef("/dev/sd1")]
    assert number_luns(stores) == {"/dev/sd1": 1, "/dev/sd10": 2, "/dev/sd2": 3}


def test_explicit_numbers_are_reserved_first() -> None:
    stores = [StoreRef("/b", lun=1), StoreRef("/a"), StoreRef("/c", lun=3)]
    assert number_luns(stores) == {"/a": 2, "/b": 1, "/c": 3}


def test_backing_stores_before_direct_stores() -> None:
    stores = [StoreRef("/a", direct=True), StoreRef("/z")]
    assert number_luns(stores) == {"/z": 1, "/a": 2}


def test_a_skipped_store_takes_no_number_but_keeps_its_reservation() -> None:
    stores = [StoreRef("/a"), StoreRef("/b"), StoreRef("/c"), StoreRef("/gone", lun=2)]
    numbers = number_luns(stores, present=lambda p: p not in {"/a", "/gone"})
    assert numbers == {"/b": 1, "/c": 3}


def test_byte_order_puts_uppercase_first() -> None:
    assert list(number_luns([StoreRef("/a"), StoreRef("/B")])) == ["/B", "/a"]


paths = st.text(alphabet="abAB/0129-_.", min_size=1, max_size=6).map(lambda s: "/" + s)


@given(st.lists(st.tuples(paths, st.booleans(), st.none() | st.integers(1, 8)), max_size=8))
def test_numbers_are_distinct_positive_and_explicit_ones_kept(
    raw: list[tuple[str, bool, int | None]],
) -> None:
    seen: set[str] = set()
    stores: list[StoreRef] = []
    explicit: set[int] = set()
    for path, direct, lun in raw:
        if path in seen or (lun is not None and lun in explicit):
            continue  # the grammar refuses duplicate paths and duplicate explicit numbers
        seen.add(path)
        if lun is not None:
            explicit.add(lun)
        stores.append(StoreRef(path, direct, lun))
    numbers = number_luns(stores)
    assert set(numbers) == seen
    assert len(set(numbers.values())) == len(numbers)
    assert all(n >= 1 for n in numbers.values())
    for store in stores:
        if store.lun is not None:
            assert numbers[store.path] == store.lun
    # Implicit numbers fill the gaps from 1 upward: none is above the count of stores
    # plus the explicit numbers it had to step over.
    implicit = sorted(n for p, n in numbers.items() if p not in {s.path for s in stores if s.lun})
    assert all(n <= len(stores) + len(explicit) for n in implicit)
