"""The CHAP accounts of a checked tree, in tgt-admin's order; the rendering tgt-admin gets."""

from __future__ import annotations

from builders import tree_of

from tgtwatch.config.accounts import Account, account_set
from tgtwatch.config.render import for_tgt_admin
from tgtwatch.model.tree import Direction

A = "iqn.2026-01.com.example:a"
B = "iqn.2026-01.com.example:b"
CONF = f"""\
incomingdiscoveryuser disco discosecret-1
outgoingdiscoveryuser odisco odiscosecret-1
<target {B}>
    backing-store /srv/b.img
    incominguser bob bobsecret-123
    incominguser alice alicesecret-1
    outgoinguser mutual mutualsecret-1
</target>
<target {A}>
    incominguser alice alicesecret-1
    initiator-address ALL
</target>
"""


def test_tgt_admins_order() -> None:
    found = account_set(tree_of(CONF))
    assert found.accounts == (
        Account("disco", "discosecret-1", Direction.INCOMING),
        Account("odisco", "odiscosecret-1", Direction.OUTGOING),
        Account("alice", "alicesecret-1", Direction.INCOMING, A),
        Account("bob", "bobsecret-123", Direction.INCOMING, B),
        Account("alice", "alicesecret-1", Direction.INCOMING, B),
        Account("mutual", "mutualsecret-1", Direction.OUTGOING, B),
    )
    assert found.targets == (A, B)
    assert found.incoming
    assert found.secrets()["alice"] == "alicesecret-1"


def test_no_tree_no_accounts() -> None:
    assert account_set(None).accounts == ()


def test_secrets_never_in_a_repr() -> None:
    assert "secret" not in repr(account_set(tree_of(CONF)))


def test_tgt_admin_gets_everything_but_the_accounts() -> None:
    tree = tree_of(CONF)
    text = for_tgt_admin(tree, "")
    assert "secret" not in text and "user" not in text
    assert f"<target {A}>" in text and "backing-store /srv/b.img" in text
    assert for_tgt_admin(None, "as given") == "as given"
