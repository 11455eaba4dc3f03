"""LUN numbering against tgt-admin itself: `tgt-admin -p` prints the LUN each store gets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tgtd_harness import RunningTgtd

from tgtwatch.tgt.luns import StoreRef, number_luns

pytestmark = pytest.mark.integration

NAMES = ["sd1", "sd2", "sd10", "sdb", "B", "a-1", "a.1", "x_9"]
_LUN_LINE = re.compile(r'--op new --mode logicalunit --tid \d+ --lun (\d+) -b "([^"]+)"')


def tgt_admin_numbers(tgtd: RunningTgtd, config: Path) -> dict[str, int]:
    done = subprocess.run(
        ["tgt-admin", "-C", str(tgtd.port), "-p", "-e", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {m.group(2): int(m.group(1)) for m in _LUN_LINE.finditer(done.stdout)}


stores_strategy = st.lists(
    st.tuples(st.sampled_from(NAMES), st.none() | st.integers(1, 6), st.booleans()),
    min_size=1,
    max_size=6,
    unique_by=lambda t: t[0],
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=stores_strategy)
def test_numbers_match_tgt_admin(
    tgtd: RunningTgtd, tmp_path: Path, raw: list[tuple[str, int | None, bool]]
) -> None:
    explicit: set[int] = set()
    stores: list[StoreRef] = []
    present: set[str] = set()
    lines = ["<target iqn.2026-01.org.tgtwatch.test:luns>"]
    for name, wanted, exists in raw:
        # The grammar refuses two stores with one explicit number.
        lun = None if wanted in explicit else wanted
        path = tmp_path / name
        if exists:
            path.touch()
            present.add(str(path))
        else:
            path.unlink(missing_ok=True)
        if lun is not None:
            explicit.add(lun)
        stores.append(StoreRef(str(path), lun=lun))
        lines += [
            f"    <backing-store {path}>",
            *([f"        lun {lun}"] if lun else []),
            "    </backing-store>",
        ]
    lines.append("</target>")
    config = tmp_path / "luns.conf"
    config.write_text("\n".join(lines) + "\n")
    assert tgt_admin_numbers(tgtd, config) == dict(number_luns(stores, present.__contains__))
