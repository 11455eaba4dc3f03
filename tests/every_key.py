"""An instance file that uses every key tgtwatch documents (docs/security.md), for the tests
that prove such a file is accepted, renders and serves."""

from __future__ import annotations

from tgtwatch.config import keys

DISCOVERY = ("disco-in", "discosecret-12")
TENANT = ("tenant-a", "tenantsecret-1")
INITIATOR = "iqn.2026-01.test.tgtwatch:initiator"
TEMPLATE = """\
# Every key tgtwatch accepts, each once (some twice: per target and per LUN).
SOCKET_OPTS="{port}"
PORTAL_OPTS="127.0.0.1:{port}"
default-driver iscsi
iSNSServerIP 127.0.0.1
iSNSServerPort 3205
iSNSAccessControl Off
iSNS Off
incomingdiscoveryuser {disco_user} {disco_secret}
outgoingdiscoveryuser disco-out discosecret-34
<target {iqn}>
    driver iscsi
    controller_tid 7
    MaxRecvDataSegmentLength 65536
    MaxXmitDataSegmentLength 65536
    HeaderDigest None
    DataDigest CRC32C,None
    InitialR2T Yes
    MaxOutstandingR2T 1
    ImmediateData Yes
    FirstBurstLength 65536
    MaxBurstLength 262144
    DataPDUInOrder Yes
    DataSequenceInOrder Yes
    ErrorRecoveryLevel 0
    IFMarker No
    OFMarker No
    DefaultTime2Wait 2
    DefaultTime2Retain 20
    OFMarkInt 2048
    IFMarkInt 2048
    MaxConnections 1
    state ready
    device-type disk
    bs-type rdwr
    write-cache on
    allow-in-use no
    scsi_id tw-every-key
    scsi_sn TW0001
    vendor_id TGTWATCH
    product_id every-key
    product_rev 0001
    sense_format 0
    removable 0
    online 1
    readonly 0
    lbppbe 0
    la_lba 0
    optimal_xfer_gran 0
    optimal_xfer_len 0
    mode_page 28:0:10:8:0:0:0:0:0:0:0:0:0
    params rotation_rate=1
    incominguser {tenant_user} {tenant_secret}
    outgoinguser target-a targetsecret-1
    initiator-address 127.0.0.1
    initiator-address 10.0.0.0/8
    initiator-name {initiator}
    direct-store {store3}
    <backing-store {store1}>
        bsoflags sync
    </backing-store>
    <backing-store {store2}>
        lun 5
        device-type disk
        bs-type aio
        block-size 512
        write-cache off
        allow-in-use no
        scsi_id tw-every-key-5
        scsi_sn TW0005
        vendor_id TGTWATCH
        product_id every-key-5
        product_rev 0005
        sense_format 1
        removable 0
        online 1
        readonly 0
        lbppbe 0
        la_lba 0
        optimal_xfer_gran 8
        optimal_xfer_len 1024
        mode_page 10:0:10:2:0:0:0:0:0:0:0:2:0
        params thin_provisioning=1
    </backing-store>
</target>
"""


def every_key_text(port: int, iqn: str, store1: str, store2: str, store3: str) -> str:
    return TEMPLATE.format(
        port=port,
        iqn=iqn,
        store1=store1,
        store2=store2,
        store3=store3,
        disco_user=DISCOVERY[0],
        disco_secret=DISCOVERY[1],
        tenant_user=TENANT[0],
        tenant_secret=TENANT[1],
        initiator=INITIATOR,
    )


def keys_used() -> set[str]:
    """Every key the template sets (so a test can prove it covers the whole list)."""
    found = set()
    for line in TEMPLATE.splitlines():
        word = line.strip().split(" ")[0]
        if word.startswith("<") and not word.startswith("</"):
            found.add(word[1:])  # a block: <target ...>, <backing-store ...>
        elif word and not word.startswith(("#", "<")):
            found.add(word)
    return found


# Accepted everywhere but deliberately absent: its grammar accepts no value (rbd/glfs only).
NOT_USED = {"bsopts"}
DOCUMENTED = set(keys.GLOBAL_KEYS) | set(keys.TARGET_KEYS) | set(keys.LUN_KEYS)
