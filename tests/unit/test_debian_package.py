"""What the Debian package ships, checked without building it: the conffile and the units.

Building and installing the .deb for real is tests/system/test_deb.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tgtwatch.config.settings import Settings, from_mapping

REPO = Path(__file__).resolve().parents[2]
CONFFILE = REPO / "debian/tgtwatch.yaml"


def test_the_conffile_is_all_defaults_and_names_every_setting() -> None:
    path = Path("/etc/tgtwatch/tgtwatch.yaml")
    text = CONFFILE.read_text()
    assert from_mapping(yaml.safe_load(text), path) == Settings()
    # Uncommented, every line is the default it says it is, and every top-level key is there.
    body = re.sub(r"^#(?=\S|  )", "", text, flags=re.MULTILINE)  # "# prose" stays
    data = yaml.safe_load(body)
    assert from_mapping(data, path) == Settings()
    assert set(data) == set(Settings.__dataclass_fields__)


def test_the_units_rewritten_for_the_package_name_only_its_own_program() -> None:
    rules = (REPO / "debian/rules").read_text()
    sed = re.search(r"UNIT_PATHS = (.*?)\n\n", rules, re.S)
    assert sed is not None
    args = sed.group(1).replace("\\\n", " ").split()
    for unit in ("tgtwatch.service", "tgtd@.service"):
        source = (REPO / "units" / unit).read_text()
        argv = ["sed", *(a.strip("'") for a in args), str(REPO / "units" / unit)]
        packaged = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert "/usr/local" not in packaged
        assert packaged.count("/usr/bin/tgtwatch") == source.count("/usr/local/bin/tgtwatch") > 0
        assert "Documentation=file:" not in packaged
