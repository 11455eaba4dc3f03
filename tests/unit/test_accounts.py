"""CHAP accounts out of a config, and the config tgt-admin is given without them.

tests/integration/test_chap_real.py compares accounts_of with what tgt-admin itself would
run (`tgt-admin -p`) for the same files.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.config.accounts import (
    ACCOUNT_KEYS,
    Account,
    Direction,
    accounts_of,
    without_accounts,
)
from tgtwatch.config.tgtconf import parse

A = "iqn.2026-11.example:a"
B = "iqn.2026-11.example:b"

CONF = f"""\
SOCKET_OPTS="3263"
incomingdiscoveryuser disco discosecret1
outgoingdiscoveryuser odisco odiscosecret
<target {B}>
    backing-store /srv/b.img
    incominguser bob bobsecret123
    outgoinguser mutual mutualsecret
    outgoinguser ignored ignoredsecret
</target>
<target {A}>
    incominguser = alice alicesecret1
    incominguser "carol carolsecret"
    <backing-store /srv/a.img>
        incominguser nested nestedsecret
    </backing-store>
</target>
"""


class Memory:
    def __init__(self, files: dict[Path, str]) -> None:
        self.files = files

    def read(self, path: Path) -> bytes:
        return self.files[path].encode()

    def expand(self, pattern: Path) -> list[Path]:
        return sorted(p for p in self.files if p.match(str(pattern)))


def flat(text: str) -> str:
    """The text as the current parser renders it: what the helper reads in production."""
    parsed = parse(Path("/c/x.conf"), Memory({Path("/c/x.conf"): text}))
    assert parsed.problems == (), parsed.problems
    return parsed.flat


def test_tgt_admins_order_and_reading() -> None:
    found = accounts_of(flat(CONF))
    assert found.problems == ()
    assert [(a.user, a.direction, a.target) for a in found.accounts] == [
        ("disco", Direction.INCOMING, None),
        ("odisco", Direction.OUTGOING, None),
        ("alice", Direction.INCOMING, A),
        ("carol", Direction.INCOMING, A),
        ("bob", Direction.INCOMING, B),
        ("mutual", Direction.OUTGOING, B),
    ]
    assert found.secrets()["carol"] == "carolsecret"
    assert found.bindings(None) == found.accounts[:2]
    assert found.targets == (A, B)
    assert found.incoming and not accounts_of("outgoingdiscoveryuser o secretsecret\n").incoming


def test_secrets_never_in_a_repr() -> None:
    found = accounts_of(flat(CONF))
    assert "alicesecret1" not in repr(found) and "alicesecret1" not in str(found.accounts)


def test_the_config_without_accounts_keeps_everything_else() -> None:
    text = flat(CONF)
    stripped = without_accounts(text)
    assert accounts_of(stripped).accounts == ()
    assert "secret" not in stripped.lower()
    kept = [line for line in text.splitlines() if "user" not in line.lower()]
    assert stripped.splitlines() == kept
    # any spelling: tgt-admin would ignore IncomingUser, but the secret still must not go
    assert (
        without_accounts("<target x>\nIncomingUser a b\n</target>\n") == "<target x>\n</target>\n"
    )


def test_what_tgt_admin_refuses_is_a_problem() -> None:
    text = (
        "incomingdiscoveryuser a secretsecret\nincomingdiscoveryuser b secretsecret\n"
        f"<target {A}>\nincominguser nosecret\nincominguser x  twospaces\n"
        "incominguser shared one-secret\n</target>\n"
        f"<target {B}>\nincominguser shared other-secret\nincominguser a,b secret\n</target>\n"
    )
    problems = accounts_of(text).problems
    assert problems == (
        "incomingdiscoveryuser is given 2 times; tgt-admin takes one",
        f"target {A}: incominguser needs a user and a secret",
        f"target {B}: incominguser user 'a,b' holds a ',' (tgtd would split it)",
        f"target {B}: user 'shared' is given another secret elsewhere; "
        "tgtd holds one secret per user",
    )


def test_extra_words_after_the_secret_are_ignored_as_tgt_admin_does() -> None:
    (account,) = accounts_of(
        f"<target {A}>\nincominguser u s3cretsecret trailing\n</target>\n"
    ).accounts
    assert account == Account("u", "s3cretsecret", Direction.INCOMING, A)


def test_merged_duplicate_blocks_and_a_repeated_binding() -> None:
    text = (
        f"<target {A}>\nincominguser u secretsecret\n</target>\n"
        f"<target {A}>\nincominguser u secretsecret\nincominguser v secretsecret\n</target>\n"
    )
    assert [a.user for a in accounts_of(text).accounts] == ["u", "v"]


def test_hash_escapes_are_undone() -> None:
    (account,) = accounts_of(flat(f"<target {A}>\nincominguser u ab\\#cd\n</target>\n")).accounts
    assert account.secret == "ab#cd"


LINE = st.one_of(
    st.sampled_from(sorted(ACCOUNT_KEYS)).map(lambda k: f"{k} user secret"),
    st.sampled_from(["backing-store /srv/a.img", "initiator-address ALL", "vendor_id X"]),
    st.sampled_from(["<target iqn.x:y>", "</target>", "<backing-store /srv/b.img>"]),
    st.text(alphabet='abc ="<>/#\\', max_size=12),
)


@given(st.lists(LINE, max_size=20))
def test_stripping_drops_exactly_the_account_lines(lines: list[str]) -> None:
    text = "".join(f"{line}\n" for line in lines)
    stripped = without_accounts(text)
    assert accounts_of(stripped).accounts == ()
    assert not any(line.split(" ")[0].lower() in ACCOUNT_KEYS for line in stripped.splitlines())
    assert len(stripped.splitlines()) == sum(
        1 for line in lines if line.strip().split(" ")[0].split("=")[0].lower() not in ACCOUNT_KEYS
    )
