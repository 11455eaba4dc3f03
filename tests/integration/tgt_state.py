"""What one tgtd holds, normalized so two tgtds loaded two ways can be compared for equality.

Read only through tgtadm (the reference client), never through the code under test:
targets with their tids, LUNs (every attribute tgtd shows), ACLs, accounts bound, each
target's iSCSI parameters (`--op show --mode target --tid N`), and the account list.
What no show output can see (passwords, vendor_id, mode pages, ...) is compared from the
initiator's side by the tests that need it.
"""

from __future__ import annotations

from typing import Any

from tgt_tree import run_tool

from tgtwatch.tgt.show import parse_show_params, parse_show_targets

# Attributes that differ between two loads of the same config for reasons that are not
# configuration: none today; the size is the backing file's, the same for both.
_VOLATILE_LUN_KEYS: frozenset[str] = frozenset()


def _tgtadm(port: int, *args: str) -> str:
    done = run_tool(["tgtadm", "-C", str(port), *args])
    assert done.returncode == 0, f"tgtadm -C {port} {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def tgtd_state(port: int) -> dict[str, Any]:
    """Everything tgtd on control port `port` shows of its configuration, as plain data."""
    targets: dict[str, Any] = {}
    for target in parse_show_targets(_tgtadm(port, "--op", "show", "--mode", "target")):
        params = parse_show_params(
            _tgtadm(port, "--op", "show", "--mode", "target", "--tid", str(target.tid))
        )
        targets[target.name] = {
            "tid": target.tid,
            "state": target.state,
            "luns": {
                lun.number: {k: v for k, v in lun.attributes if k not in _VOLATILE_LUN_KEYS}
                for lun in target.luns
            },
            "acl": sorted(target.acl),
            "accounts": sorted(target.accounts),
            "params": params,
        }
    accounts = _tgtadm(port, "--op", "show", "--mode", "account").splitlines()[1:]
    return {"targets": targets, "accounts": sorted(a.strip() for a in accounts if a.strip())}
