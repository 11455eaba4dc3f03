"""The audit trail: record formats, sinks (real journal socket, stderr, JSON lines), redaction."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import string
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import ListSink, RecordingAuditor
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.journal_proto import decode_entry
from tgtwatch.model.records import AuditAction, AuditRecord, AuditResult
from tgtwatch.model.redact import redact
from tgtwatch.telemetry.audit import (
    MESSAGE_IDS,
    PRIORITIES,
    Auditor,
    JournalSink,
    JsonLinesSink,
    StreamSink,
    journal_fields,
    json_object,
    make_auditor,
    stderr_line,
    summary,
)
from tgtwatch.telemetry.journal import JournalClient

SECRET = "Sup3rS3cret!"


def _record(**changes: object) -> AuditRecord:
    base: dict[str, object] = {
        "ts": 1700000000.25,
        "action": AuditAction.START,
        "instance": "vol1",
        "port": 3263,
        "config": "/etc/mytgt/conf.d/vol1.conf",
        "sha256": "ab" * 32,
        "result": AuditResult.OK,
        "duration_ms": 412,
        "message": "2 targets ready",
        "output": "",
    }
    base.update(changes)
    return AuditRecord(**base)  # type: ignore[arg-type]


def _leaky() -> AuditRecord:
    return _record(
        result=AuditResult.FAILED,
        message=f"line 7: incominguser alice {SECRET}",
        output=(
            "tgtadm -C 3263 --lld iscsi --mode account --op new "
            f"--user=alice --password={SECRET}\ntgtadm: this account already exists\n"
        ),
    )


@pytest.fixture
def sock_dir(tmp_path: Path) -> Iterator[Path]:
    if len(str(tmp_path)) < 90:  # sun_path is 108 bytes
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="tw", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short)


@pytest.fixture
def journal(sock_dir: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_dir / "j.sock"))
    sock.settimeout(5)  # a bug must fail the test, not hang it
    with sock:
        yield sock


def _client(sock: socket.socket) -> JournalClient:
    name = sock.getsockname()
    assert isinstance(name, str)
    return JournalClient(name)


def _decode(data: bytes) -> list[tuple[str, str]]:
    return [(key, value.decode()) for key, value in decode_entry(data)]


# --- the contract's vocabulary ------------------------------------------------------------


def test_actions_and_results_are_the_contracts_words() -> None:
    assert [a.value for a in AuditAction] == [
        "start",
        "reload",
        "drain",
        "stop",
        "reject",
        "adopt",
        "pending",
        "repair",  # an extension of the contract: what ran had drifted, and was repaired
    ]
    assert [r.value for r in AuditResult] == ["ok", "failed", "partial", "skipped"]


def test_message_ids_are_fixed_distinct_128_bit_ids() -> None:
    # Pinned: journalctl MESSAGE_ID=... queries and catalogs rely on them never changing.
    assert dict(MESSAGE_IDS) == {
        AuditAction.START: "9d8a997413a8401588a9e6b568a40628",
        AuditAction.RELOAD: "56c81f0159f645ffa25f652931014c63",
        AuditAction.DRAIN: "ab44d9e0257e45a4864748f62bc4cb4f",
        AuditAction.STOP: "e655c24f72cc4bc28a9875607b195951",
        AuditAction.REJECT: "701ebfd42169436d8258956f96650324",
        AuditAction.ADOPT: "4ef6735d556844fda8a25d3687fe0cd3",
        AuditAction.PENDING: "a67a1c20ad824a40bb9d015065e2bfbf",
        AuditAction.REPAIR: "aa45e414ecd74639831e776c5dfcebcc",
    }
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in MESSAGE_IDS.values())


def test_priorities_follow_the_result() -> None:
    assert dict(PRIORITIES) == {
        AuditResult.OK: 6,
        AuditResult.SKIPPED: 5,
        AuditResult.PARTIAL: 4,
        AuditResult.FAILED: 3,
    }


# --- formats ------------------------------------------------------------------------------


def test_journal_fields_exactly() -> None:
    assert journal_fields(_record()) == [
        ("MESSAGE", "start vol1 port 3263: ok in 412 ms: 2 targets ready"),
        ("PRIORITY", 6),
        ("MESSAGE_ID", "9d8a997413a8401588a9e6b568a40628"),
        ("SYSLOG_IDENTIFIER", "tgtwatch"),
        ("TGTWATCH_ACTION", "start"),
        ("TGTWATCH_INSTANCE", "vol1"),
        ("TGTWATCH_PORT", 3263),
        ("TGTWATCH_CONFIG", "/etc/mytgt/conf.d/vol1.conf"),
        ("TGTWATCH_SHA256", "ab" * 32),
        ("TGTWATCH_RESULT", "ok"),
        ("TGTWATCH_DURATION_MS", 412),
    ]


def test_journal_fields_without_port_and_with_output() -> None:
    fields = dict(
        journal_fields(
            _record(
                action=AuditAction.REJECT,
                port=None,
                result=AuditResult.SKIPPED,
                message="",
                output="boom\n",
            )
        )
    )
    assert "TGTWATCH_PORT" not in fields
    assert fields["TGTWATCH_OUTPUT"] == "boom\n"
    assert fields["MESSAGE"] == "reject vol1: skipped in 412 ms"
    assert fields["PRIORITY"] == 5


def test_summary_includes_the_message_only_when_there_is_one() -> None:
    assert summary(_record(message="")) == "start vol1 port 3263: ok in 412 ms"


def test_json_object_has_exactly_the_contract_keys() -> None:
    assert list(json_object(_record())) == [
        "ts",
        "action",
        "instance",
        "port",
        "config",
        "sha256",
        "result",
        "duration_ms",
        "message",
    ]
    with_output = json_object(_record(output="x", port=None))
    assert with_output["output"] == "x"
    assert with_output["port"] is None


def test_stderr_line_is_one_logfmt_line() -> None:
    line = stderr_line(_record(message='a\nb\u2028c "q" \u202eevil', output="o\r\n"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.splitlines() == [line[:-1]]
    assert line.startswith(
        "tgtwatch audit: ts=1700000000.25 action=start instance=vol1 port=3263 "
        "config=/etc/mytgt/conf.d/vol1.conf sha256=" + "ab" * 32 + " result=ok duration_ms=412 "
    )
    assert 'message="a\\nb\\u2028c \\"q\\" \\u202eevil"' in line
    assert 'output="o\\r\\n"' in line


def test_stderr_line_port_none_and_empty_values() -> None:
    line = stderr_line(_record(port=None, sha256="", message=""))
    assert " port=null config=" in line
    assert ' sha256="" ' in line
    assert line.rstrip().endswith('message=""')


# --- the journal sink, on a real socket ---------------------------------------------------


def test_auditor_sends_one_redacted_entry_to_the_journal(journal: socket.socket) -> None:
    stderr = io.StringIO()
    auditor = make_auditor(clock=lambda: 5.0, stderr=stderr, journal=_client(journal))
    auditor.record(_leaky())
    fields = dict(_decode(journal.recv(1 << 16)))
    assert SECRET not in repr(fields)
    assert fields["MESSAGE"] == (
        "start vol1 port 3263: failed in 412 ms: line 7: incominguser alice ***"
    )
    assert "--password=*** " not in fields["TGTWATCH_OUTPUT"]
    assert "--password=***\ntgtadm: this account already exists" in fields["TGTWATCH_OUTPUT"]
    assert fields["PRIORITY"] == "3"
    assert fields["SYSLOG_IDENTIFIER"] == "tgtwatch"
    assert fields["TGTWATCH_ACTION"] == "start"
    assert fields["TGTWATCH_RESULT"] == "failed"
    assert stderr.getvalue() == ""


def test_without_journal_each_record_is_one_stderr_line(sock_dir: Path) -> None:
    stderr = io.StringIO()
    client = JournalClient(str(sock_dir / "absent.sock"))
    auditor = make_auditor(clock=lambda: 5.0, stderr=stderr, journal=client)
    auditor.record(_leaky())
    auditor.record(_record(action=AuditAction.RELOAD))
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2
    assert "action=start" in lines[0] and "result=failed" in lines[0]
    assert "action=reload" in lines[1]
    assert SECRET not in stderr.getvalue()
    assert "incominguser alice ***" in lines[0]


def test_journal_sink_counts_why_it_fell_back(sock_dir: Path) -> None:
    stderr = io.StringIO()
    sink = JournalSink(JournalClient(str(sock_dir / "absent.sock")), stderr)
    sink.write(_record())
    assert sink.failures == 1
    assert sink.last_error is not None and sink.last_error.errno is not None
    assert stderr.getvalue().count("\n") == 1


def test_no_journal_client_means_stderr() -> None:
    stderr = io.StringIO()
    make_auditor(clock=lambda: 0.0, stderr=stderr, journal=None).record(_record())
    assert stderr.getvalue() == stderr_line(_record())


# --- the JSON-lines sink ------------------------------------------------------------------


def test_audit_log_gets_one_json_object_per_line_appended(
    tmp_path: Path, journal: socket.socket
) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text('{"earlier": true}\n')
    stderr = io.StringIO()
    auditor = make_auditor(
        clock=lambda: 7.5, stderr=stderr, journal=_client(journal), audit_log=log
    )
    auditor.record(_record())
    auditor.record_now(
        AuditAction.PENDING,
        AuditResult.PARTIAL,
        instance="vol1",
        port=3263,
        config=Path("/etc/mytgt/conf.d/vol1.conf"),
        sha256="cd" * 32,
        duration_ms=9,
        message="1 target in use: iqn.2026-11.com.example:vol1",
    )
    auditor.record(_leaky())
    lines = log.read_text().splitlines()
    assert lines[0] == '{"earlier": true}'
    objects = [json.loads(line) for line in lines[1:]]
    assert objects[0] == {
        "ts": 1700000000.25,
        "action": "start",
        "instance": "vol1",
        "port": 3263,
        "config": "/etc/mytgt/conf.d/vol1.conf",
        "sha256": "ab" * 32,
        "result": "ok",
        "duration_ms": 412,
        "message": "2 targets ready",
    }
    assert objects[1]["ts"] == 7.5
    assert objects[1]["action"] == "pending"
    assert objects[1]["result"] == "partial"
    assert "output" not in objects[1]
    assert objects[2]["output"].startswith("tgtadm -C 3263")
    assert SECRET not in log.read_text()
    assert stderr.getvalue() == ""
    for _ in range(3):  # and the journal got all three too
        journal.recv(1 << 16)


def test_audit_log_keeps_unicode_and_undecodable_names(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    config = os.fsdecode(b"/etc/mytgt/conf.d/\xff.conf")
    JsonLinesSink(log).write(_record(message="卷 ready ✓", config=config))
    obj = json.loads(log.read_bytes().decode("utf-8"))
    assert obj["message"] == "卷 ready ✓"
    assert obj["config"] == config  # the \udcff escape round-trips


def test_unwritable_audit_log_is_reported_with_the_record(
    tmp_path: Path, journal: socket.socket
) -> None:
    stderr = io.StringIO()
    log = tmp_path / "missing-dir" / "audit.jsonl"
    auditor = make_auditor(
        clock=lambda: 0.0, stderr=stderr, journal=_client(journal), audit_log=log
    )
    auditor.record(_leaky())
    journal.recv(1 << 16)  # the journal still got it
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"tgtwatch: audit sink JsonLinesSink({log}) failed: ")
    assert lines[1].startswith("tgtwatch audit: ") and "action=start" in lines[1]
    assert SECRET not in stderr.getvalue()


def test_parallel_lanes_never_interleave_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    auditor = Auditor([JsonLinesSink(log)], clock=lambda: 0.0, errors=io.StringIO())

    def lane(port: int) -> None:
        for i in range(50):
            auditor.record(_record(port=port, message="m" * (i * 97)))

    threads = [threading.Thread(target=lane, args=(3260 + n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    objects = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(objects) == 200


# --- failures of the last resort ----------------------------------------------------------


def test_a_broken_error_stream_counts_lost_records(tmp_path: Path) -> None:
    errors = io.StringIO()
    errors.close()
    auditor = Auditor(
        [JsonLinesSink(tmp_path / "no" / "a.jsonl")], clock=lambda: 0.0, errors=errors
    )
    auditor.record(_record())
    assert auditor.lost == 1


def test_a_failing_stream_sink_does_not_raise() -> None:
    broken = io.StringIO()
    broken.close()
    errors = io.StringIO()
    auditor = Auditor([StreamSink(broken)], clock=lambda: 0.0, errors=errors)
    auditor.record(_record())
    assert "audit sink StreamSink failed" in errors.getvalue()


# --- every sink redacts, even used directly -----------------------------------------------


def test_every_sink_redacts_on_its_own(tmp_path: Path, journal: socket.socket) -> None:
    stream = io.StringIO()
    StreamSink(stream).write(_leaky())
    JsonLinesSink(tmp_path / "a.jsonl").write(_leaky())
    JournalSink(_client(journal), io.StringIO()).write(_leaky())
    listed = ListSink()
    listed.write(_leaky())
    assert SECRET not in stream.getvalue()
    assert SECRET not in (tmp_path / "a.jsonl").read_text()
    assert SECRET not in journal.recv(1 << 16).decode()
    assert SECRET not in repr(listed.records)


# --- the fake -----------------------------------------------------------------------------


def test_recording_auditor() -> None:
    auditor = RecordingAuditor(clock=lambda: 42.0)
    auditor.record(_leaky())
    made = auditor.record_now(
        AuditAction.STOP, AuditResult.OK, instance="vol2", port=3264, config="/c"
    )
    assert made.ts == 42.0
    assert auditor.actions() == [
        (AuditAction.START, "vol1", AuditResult.FAILED),
        (AuditAction.STOP, "vol2", AuditResult.OK),
    ]
    assert auditor.records[1] == made
    assert SECRET not in repr(auditor.records)
    assert auditor.errors.getvalue() == ""


# --- redaction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("incominguser alice s3cret", "incominguser alice ***"),
        ("\tOutgoingUser = bob two words # x", "\tOutgoingUser = bob ***"),
        ("incomingdiscoveryuser d pw\nnext", "incomingdiscoveryuser d ***\nnext"),
        ("outgoingdiscoveryuser d pw\r\nnext", "outgoingdiscoveryuser d ***\r\nnext"),
        ("incominguser alice", "incominguser alice"),  # no password on the line
        (
            "incominguser alice\npassword-less next line",
            "incominguser alice\npassword-less next line",
        ),
        (
            "tgtadm -C 0 --mode account --op new --user=u --password=secret",
            "tgtadm -C 0 --mode account --op new --user=u --password=***",
        ),
        ("tgtadm --op new --password secret --user u", "tgtadm --op new --password *** --user u"),
        ("tgtadm --pass='se cret' --user u", "tgtadm --pass=*** --user u"),
        ("tgtadm --passwo=se\\ cret x", "tgtadm --passwo=*** x"),
        ("tgtadm --op new -w secret --user u", "tgtadm --op new -w *** --user u"),
        ("tgtadm --op new -wsecret", "tgtadm --op new -w***"),
        (
            "['tgtadm', '--password', 'secret', '-w', 'x']",
            "['tgtadm', '--password', '***', '-w', '***']",
        ),
        ('["tgtadm", "-w", "sec\\"ret"]', '["tgtadm", "-w", "***"]'),
        ("node.session.auth.password = secret", "node.session.auth.password = ***"),
        # not secrets: left alone
        ("ls -w 80", "ls -w 80"),
        ("tgtadm --op show --mode target", "tgtadm --op show --mode target"),
        ("--passthrough x", "--passthrough x"),
        ("backing-store /srv/incoming/user.img", "backing-store /srv/incoming/user.img"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected


_TOKEN = st.text(
    alphabet=[
        c for c in string.ascii_letters + string.digits + string.punctuation if c not in "\"'\\"
    ],
    min_size=1,
    max_size=16,
)
_SECRET = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%&()*+,-./:;<>?@[]^_{|}~",
    min_size=6,
    max_size=24,
)
_FILLER = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=40,
)
_KEYWORDS = st.sampled_from(
    ["incominguser", "outgoinguser", "incomingdiscoveryuser", "outgoingdiscoveryuser"]
)
_SPACE = st.sampled_from([" ", "  ", "\t", " \t "])


# Printable ASCII (repr and json.dumps keep it as it is); a backtick is never in a secret.
_PLACEHOLDER = "`secret`"


@st.composite
def _secret_line(draw: st.DrawFn, user: str, secret: str) -> str:
    """One line carrying ``secret`` the way tgt, tgt-admin or our own messages put it."""
    sp = draw(_SPACE)
    keyword = draw(_KEYWORDS)
    keyword = draw(st.sampled_from([keyword, keyword.upper(), keyword.capitalize()]))
    forms = [
        f"{keyword}{sp}{user}{sp}{secret}",
        f"{sp}{keyword} = {user} {secret}",
        f"tgtadm -C 3263 --lld iscsi --mode account --op new --user={user} --password={secret}",
        f"tgtadm --lld iscsi --op new --mode account --user {user} --password{sp}{secret}",
        f"tgtadm --op new --mode account --user {user} -w{sp}{secret}",
        f"tgtadm --op new --mode account --user {user} -w{secret}",
        f"tgtadm --op new --mode account --user {user} --pass={secret}",
        repr(["tgtadm", "--mode", "account", "--user", user, "--password", secret]),
        repr(["tgtadm", "--mode", "account", "--user", user, "-w", secret]),
        json.dumps(["tgtadm", "--password", secret]),
        f"Command: tgtadm --mode account --op new --user={user} --password={secret} "
        "exited with code: 22.",
    ]
    prefix = draw(st.sampled_from(["", "line 3: ", "# ", "tgt-admin: "]))
    return prefix + draw(st.sampled_from(forms))


@st.composite
def _text_with_secrets(draw: st.DrawFn) -> tuple[str, list[str]]:
    lines: list[str] = []
    secrets: list[str] = []
    others: list[str] = []  # everything but the secrets themselves
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        fillers = draw(st.lists(_FILLER, max_size=3))
        user = draw(_TOKEN)
        secret = draw(_SECRET)
        lines.extend(fillers)
        others.extend([*fillers, user])
        secrets.append(secret)
        # Drawn around a placeholder: the line's own words ("--password=") are "others" too.
        assume(_PLACEHOLDER not in user)
        template = draw(_secret_line(user, _PLACEHOLDER))
        others.append(template)
        lines.append(template.replace(_PLACEHOLDER, secret))
    tail = draw(st.lists(_FILLER, max_size=3))
    lines.extend(tail)
    others.extend(tail)
    # Only a secret that cannot occur by chance elsewhere proves anything.
    assume(not any(secret in other for secret in secrets for other in others))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines), secrets


@given(_text_with_secrets())
def test_no_secret_survives_redaction(case: tuple[str, list[str]]) -> None:
    text, secrets = case
    redacted = redact(text)
    for secret in secrets:
        assert secret not in redacted, (secret, redacted)


@given(st.text())
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@given(st.text(alphabet=st.characters(exclude_characters="=:"), max_size=200))
def test_text_without_secret_markers_is_untouched(text: str) -> None:
    assume(not re.search(r"(?i)user|pass|-w", text))
    assert redact(text) == text
