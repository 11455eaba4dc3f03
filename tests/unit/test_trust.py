"""Trust checks: only files root could have written, regular, sane-sized, inside the tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from builders import write

from tgtwatch.config.tgtconf import SourceError
from tgtwatch.config.trust import TrustedFiles, TrustPolicy, check_stat
from tgtwatch.model.structs import Rule

ROOT_POLICY = TrustPolicy()


def fake_stat(mode: int, uid: int = 0, size: int = 10) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, 0, size, 0, 0, 0))


def test_check_stat_accepts_a_root_owned_regular_file() -> None:
    assert check_stat(fake_stat(stat.S_IFREG | 0o644), ROOT_POLICY) is None
    assert check_stat(fake_stat(stat.S_IFREG | 0o400), ROOT_POLICY) is None


@pytest.mark.parametrize(
    ("st", "words"),
    [
        (fake_stat(stat.S_IFDIR | 0o755), "not a regular file"),
        (fake_stat(stat.S_IFIFO | 0o644), "not a regular file"),
        (fake_stat(stat.S_IFCHR | 0o644), "not a regular file"),
        (fake_stat(stat.S_IFLNK | 0o777), "not a regular file"),
        (fake_stat(stat.S_IFREG | 0o644, uid=1000), "owned by uid 1000, not 0"),
        (fake_stat(stat.S_IFREG | 0o664), "group- or world-writable (mode 0664)"),
        (fake_stat(stat.S_IFREG | 0o646), "group- or world-writable (mode 0646)"),
        (fake_stat(stat.S_IFREG | 0o644, size=1024 * 1024 + 1), "more than the 1048576"),
    ],
)
def test_check_stat_refuses(st: os.stat_result, words: str) -> None:
    why = check_stat(st, ROOT_POLICY)
    assert why is not None
    assert words in why


def test_check_stat_size_limit_is_inclusive() -> None:
    assert check_stat(fake_stat(stat.S_IFREG | 0o644, size=1024 * 1024), ROOT_POLICY) is None


def test_the_policy_owner_is_the_one_trusted() -> None:
    assert check_stat(fake_stat(stat.S_IFREG | 0o644, uid=42), TrustPolicy(owner_uid=42)) is None
    assert check_stat(fake_stat(stat.S_IFREG | 0o644), TrustPolicy(owner_uid=42)) is not None


def refused(source: TrustedFiles, path: Path) -> SourceError:
    with pytest.raises(SourceError) as info:
        source.read(path)
    return info.value


def test_reads_a_good_file(tmp_path: Path, policy: TrustPolicy) -> None:
    path = write(tmp_path / "x.conf", "A=1\n")
    assert TrustedFiles(tmp_path, policy).read(path) == b"A=1\n"


@pytest.mark.parametrize("mode", [0o664, 0o666, 0o646, 0o620])
def test_group_or_world_writable(tmp_path: Path, policy: TrustPolicy, mode: int) -> None:
    path = write(tmp_path / "x.conf", "A=1\n", mode)
    error = refused(TrustedFiles(tmp_path, policy), path)
    assert error.rule is Rule.TRUST
    assert "writable" in str(error)


@pytest.mark.skipif(os.getuid() != 0, reason="chown needs root")
def test_owned_by_another_user(tmp_path: Path) -> None:
    path = write(tmp_path / "x.conf", "A=1\n")
    os.chown(path, 65534, 65534)
    error = refused(TrustedFiles(tmp_path, TrustPolicy(owner_uid=0)), path)
    assert error.rule is Rule.TRUST
    assert "owned by uid 65534" in str(error)


def test_too_big(tmp_path: Path, policy: TrustPolicy) -> None:
    path = write(tmp_path / "x.conf", "A=1\n" * 100)
    small = TrustPolicy(owner_uid=policy.owner_uid, max_bytes=100)
    assert "more than the 100" in str(refused(TrustedFiles(tmp_path, small), path))
    exact = TrustPolicy(owner_uid=policy.owner_uid, max_bytes=400)
    assert TrustedFiles(tmp_path, exact).read(path) == b"A=1\n" * 100


def test_missing_file(tmp_path: Path, policy: TrustPolicy) -> None:
    error = refused(TrustedFiles(tmp_path, policy), tmp_path / "nope.conf")
    assert error.rule is Rule.INCLUDE


def test_a_directory_named_x_conf(tmp_path: Path, policy: TrustPolicy) -> None:
    (tmp_path / "x.conf").mkdir()
    error = refused(TrustedFiles(tmp_path, policy), tmp_path / "x.conf")
    assert (error.rule, str(error)) == (Rule.TRUST, "not a regular file")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, policy: TrustPolicy) -> None:
    os.mkfifo(tmp_path / "x.conf", 0o644)
    # opening a FIFO for reading blocks until a writer comes: refused before open()
    error = refused(TrustedFiles(tmp_path, policy), tmp_path / "x.conf")
    assert str(error) == "not a regular file"


@pytest.mark.skipif(os.getuid() != 0, reason="mknod needs root")
def test_a_device_node_is_refused(tmp_path: Path, policy: TrustPolicy) -> None:
    zero = os.stat("/dev/zero").st_rdev  # reading it never ends
    os.mknod(tmp_path / "x.conf", stat.S_IFCHR | 0o644, zero)
    error = refused(TrustedFiles(tmp_path, policy), tmp_path / "x.conf")
    assert str(error) == "not a regular file"


def test_symlink_to_a_good_file_inside_is_followed(tmp_path: Path, policy: TrustPolicy) -> None:
    write(tmp_path / "real/a.inc", "A=1\n")
    (tmp_path / "x.conf").symlink_to("real/a.inc")
    assert TrustedFiles(tmp_path, policy).read(tmp_path / "x.conf") == b"A=1\n"


def test_symlink_outside_the_directory(tmp_path: Path, policy: TrustPolicy) -> None:
    write(tmp_path / "outside.conf", "A=1\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/x.conf").symlink_to(tmp_path / "outside.conf")
    error = refused(TrustedFiles(tmp_path / "d", policy), tmp_path / "d/x.conf")
    assert error.rule is Rule.TRUST
    assert "outside" in str(error)


def test_symlink_to_a_bad_file_inside(tmp_path: Path, policy: TrustPolicy) -> None:
    write(tmp_path / "bad.inc", "A=1\n", 0o666)
    (tmp_path / "x.conf").symlink_to("bad.inc")
    assert "writable" in str(refused(TrustedFiles(tmp_path, policy), tmp_path / "x.conf"))


def test_dangling_symlink(tmp_path: Path, policy: TrustPolicy) -> None:
    (tmp_path / "x.conf").symlink_to("gone.inc")
    error = refused(TrustedFiles(tmp_path, policy), tmp_path / "x.conf")
    assert error.rule is Rule.INCLUDE


def test_symlinked_root_directory(tmp_path: Path, policy: TrustPolicy) -> None:
    write(tmp_path / "real/x.conf", "A=1\n")
    (tmp_path / "link").symlink_to("real")
    source = TrustedFiles(tmp_path / "link", policy)
    assert source.read(tmp_path / "link/x.conf") == b"A=1\n"


def test_expand_glob_skips_dotfiles_and_directories_sorted(
    tmp_path: Path, policy: TrustPolicy
) -> None:
    for name in ["b.conf", "a.conf", ".h.conf", "c.conf~"]:
        write(tmp_path / "d" / name, "")
    (tmp_path / "d/dir.conf").mkdir()
    source = TrustedFiles(tmp_path, policy)
    assert source.expand(tmp_path / "d/*.conf") == [tmp_path / "d/a.conf", tmp_path / "d/b.conf"]
    assert source.expand(tmp_path / "nothing/*.conf") == []


def test_expand_glob_sorts_whole_paths_as_strings(tmp_path: Path, policy: TrustPolicy) -> None:
    write(tmp_path / "a/x.conf", "")
    write(tmp_path / "a-b/x.conf", "")
    got = TrustedFiles(tmp_path, policy).expand(tmp_path / "*/x.conf")
    assert got == [tmp_path / "a-b/x.conf", tmp_path / "a/x.conf"]  # '-' < '/', as bsd_glob


def test_expand_directory_and_plain_file(tmp_path: Path, policy: TrustPolicy) -> None:
    write(tmp_path / "d/2", "")
    write(tmp_path / "d/1", "")
    write(tmp_path / "d/.3", "")
    (tmp_path / "d/sub").mkdir()
    source = TrustedFiles(tmp_path, policy)
    assert source.expand(tmp_path / "d") == [tmp_path / "d/.3", tmp_path / "d/1", tmp_path / "d/2"]
    assert source.expand(tmp_path / "d/1") == [tmp_path / "d/1"]
    assert source.expand(tmp_path / "d/nope") == []
