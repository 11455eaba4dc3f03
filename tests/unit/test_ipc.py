"""tgtd's management protocol as bytes: layout, payloads, refusals, answers.

The layout below is usr/tgtadm.h's; test_ipc_real.py checks the same builders byte for
byte against what the real tgtadm sends, and their effect on a real tgtd.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.tgt import ipc
from tgtwatch.tgt import ipc_ops as ops
from tgtwatch.tgt.ipc_client import next_poll_delay


def fields(data: bytes) -> dict[str, object]:
    names = [
        "mode",
        "op",
        "lld",
        "len",
        "tid",
        "sid",
        "lun",
        "cid",
        "host_no",
        "device_type",
        "ac_dir",
        "pack",
        "force",
    ]
    return dict(zip(names, ipc.REQUEST.unpack(data[: ipc.REQUEST.size]), strict=True))


def test_the_request_header_is_120_bytes_with_tgtadm_h_offsets() -> None:
    assert ipc.REQUEST.size == 120
    assert ipc.RESPONSE.size == 8
    # offsets of struct tgtadm_req on LP64: lld at 8, len at 72, sid at 80, force at 116
    data = ipc.Request(ipc.Mode.ACCOUNT, ipc.Op.BIND, tid=7, lun=9, force=True, lld="iscsi")
    raw = data.encode()
    assert struct.unpack_from("=i", raw, 0) == (ipc.Mode.ACCOUNT,)
    assert struct.unpack_from("=i", raw, 4) == (ipc.Op.BIND,)
    assert raw[8:13] == b"iscsi" and raw[13:72] == bytes(59)
    assert struct.unpack_from("=I", raw, 72) == (120,)
    assert struct.unpack_from("=i", raw, 76) == (7,)
    assert struct.unpack_from("=Q", raw, 88) == (9,)
    assert struct.unpack_from("=I", raw, 116) == (1,)


def test_defaults_are_tgtadms() -> None:
    f = fields(ops.show_targets().encode())
    assert f["tid"] == -1 and f["lun"] == (1 << 64) - 1
    assert f["sid"] == f["cid"] == f["host_no"] == f["device_type"] == f["force"] == 0


def test_no_payload_means_no_bytes_not_an_empty_string() -> None:
    raw = ops.show_system().encode()
    assert len(raw) == 120 and fields(raw)["len"] == 120


@pytest.mark.parametrize(
    ("request_", "payload"),
    [
        (ops.set_state("offline"), "State=offline"),
        (ops.new_target(1, "iqn.2026-01.x:a"), "targetname=iqn.2026-01.x:a"),
        (ops.update_target(1, "HeaderDigest", "CRC32C,None"), "HeaderDigest=CRC32C,None"),
        (ops.bind_address(1, "10.0.0.0/24"), "initiator-address=10.0.0.0/24"),
        (ops.unbind_initiator(1, "iqn.x:i"), "initiator-name=iqn.x:i"),
        (
            ops.new_lun(1, 2, "/srv/a.img", bstype="aio", bsoflags="sync", blocksize="4096"),
            "path=/srv/a.img,bstype=aio,bsoflags=sync,blocksize=4096",
        ),
        (
            ops.new_lun(1, 2, "/dev/st0", bstype="rdwr", device_type=ipc.DeviceType.TAPE),
            "path=/dev/st0,bstype=ssc",
        ),
        (
            ops.update_lun(1, 2, [("vendor_id", "ACME"), ("mode_page", "8:0:18:0x10")]),
            "targetOps vendor_id=ACME,mode_page=8:0:18:0x10,",
        ),
        (ops.new_account("alice", "s3cret,=x"), "user=alice,password=s3cret,=x"),
        (ops.bind_account("alice", 3, outgoing=True), "user=alice"),
    ],
)
def test_payloads_are_tgtadms_strings_with_a_nul(request_: ipc.Request, payload: str) -> None:
    raw = request_.encode()
    assert raw[120:] == payload.encode() + b"\0"
    assert fields(raw)["len"] == 120 + len(payload) + 1


def test_account_direction_and_discovery() -> None:
    assert fields(ops.bind_account("u").encode())["tid"] == -1  # GLOBAL_TID
    assert fields(ops.bind_account("u", outgoing=True).encode())["ac_dir"] == 1
    assert fields(ops.unbind_account("u", 4).encode())["ac_dir"] == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: ops.new_target(1, "iqn.x:a,targetname=iqn.x:b"),
        lambda: ops.new_lun(1, 1, "/srv/a.img,path=/etc/shadow"),
        lambda: ops.new_lun(1, 1, "/srv/a.img", bsopts="x,path=/etc/shadow"),
        lambda: ops.bind_account("alice,bob"),
        lambda: ops.new_account("alice", "pass\0word"),
        lambda: ops.bind_address(1, "10.0.0.1,initiator-name=x"),
        lambda: ops.update_target(1, "a=b", "c"),
        lambda: ipc.Request(ipc.Mode.SYSTEM, ipc.Op.SHOW, lld="x" * 64),
        lambda: ops.new_lun(1, 1, "/srv/" + "a" * ipc.MAX_PAYLOAD),
    ],
)
def test_values_tgtd_would_split_or_drop_are_refused(make: object) -> None:
    with pytest.raises(ipc.RequestError):
        make().encode()  # type: ignore[operator]


def test_lun_params_refuse_separators_and_nothing() -> None:
    with pytest.raises(ipc.RequestError):
        ops.update_lun(1, 1, [("vendor_id", "A,path=/etc/shadow")])
    with pytest.raises(ipc.RequestError):
        ops.update_lun(1, 1, [])


def test_describe_never_shows_the_password() -> None:
    request = ops.new_account("alice", "topsecretpassword")
    text = request.describe()
    assert "topsecretpassword" not in text and "topsecretpassword" not in repr(request)
    assert text == "--mode account --op new [user=alice,password=***]"
    assert (
        ops.delete_target(3, force=True).describe() == "--mode target --op delete --tid 3 --force"
    )


@given(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
        min_size=1,
        max_size=64,
    )
)
def test_any_password_is_carried_whole(secret: str) -> None:
    raw = ops.new_account("u", secret).encode()
    assert raw[120:] == f"user=u,password={secret}".encode() + b"\0"
    # Whatever the secret, the description shows the mask in its place.
    assert ops.new_account("u", secret).describe().partition("password=")[2] == "***]"


def test_responses() -> None:
    ok = ipc.decode_response(struct.pack("=II", 0, 8 + 6))
    assert ok.ok and ok.body_length == 6
    bad = ipc.decode_response(struct.pack("=II", ipc.Status.TARGET_ACTIVE, 8))
    assert not bad.ok and ipc.status_message(bad.status) == "this target is still active"
    assert ipc.status_message(99) == "unknown tgtadm error 99"
    assert ipc.decode_text(b"Account list:\n    a\n\0") == "Account list:\n    a\n"
    assert ipc.decode_text(b"") == ""


def test_a_starting_tgtd_is_polled_every_millisecond_then_with_backoff() -> None:
    # tgtd listens 5-10 ms after its exec: a backoff from the first poll (1, 2, 4, 8 ms)
    # made one that listened at 7.1 ms answer at 15 ms.
    elapsed, delay, waits = 0.0, 0.001, []
    while elapsed < 0.2:
        waits.append(delay)
        elapsed += delay
        delay = next_poll_delay(delay, elapsed, 0.03, 0.05)
    assert set(waits[:29]) == {0.001}  # every poll in the first 30 ms
    assert waits[-1] == 0.05 and waits == sorted(waits)
    assert len(waits) < 40
