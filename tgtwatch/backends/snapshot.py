"""The canonical rendering tgt-admin reads for one instance (engine tgt-admin only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tgtwatch.config.render import for_tgt_admin
from tgtwatch.model.structs import InstanceSpec

SNAPSHOT_SUBDIR = "snapshots"


def write_snapshot(directory: Path, spec: InstanceSpec) -> Path:
    """The config tgt-admin reads: tgtwatch's canonical rendering of what it checked, with
    no CHAP account (tgt-admin would put the secret in tgtadm's argv; tgtwatch binds
    accounts itself over the control socket).

    tgt-admin reads its -c file by name and passes values to a shell: handing it the
    instance file itself would let a file swapped after the check run as root. The
    snapshot lives in a root-only directory. A spec without text (built by hand in a
    test: every parsed spec has its rendering) is its file.
    """
    if not spec.text:
        return spec.config
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    path = directory / f"{spec.port}-{spec.name}.conf"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{spec.port}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(for_tgt_admin(spec.tree, spec.text))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
