"""suanli.code: what the CLI zips and what the API accepts as a job's shipped code.

Invariants checked: the default and user excludes are left out of the zip and symlinks are
not followed; a directory over the limit is refused before anything is sent; an uploaded zip
with an absolute path, a `..` component, a symlink member, too much unpacked data or no zip
at all is refused with one line saying why, and nothing is stored; a good zip is stored once
under its SHA-256, atomically, and named `sha256:<hex>`.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from suanli.code import CodeError, blob_path, check, code_id, pack, store

MIB = 1024 * 1024


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "mod.py").write_text("X = 1\n")
    (root / "pkg" / "mod.pyc").write_bytes(b"\0")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"\0" * 1000)
    (root / "ckpt.pt").write_bytes(b"\0")
    outside = root.parent / "secret.txt"
    outside.write_text("not shipped")
    (root / "link.txt").symlink_to(outside)
    return root


def names(data: bytes) -> list[str]:
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


def test_pack_leaves_out_excludes_and_symlinks(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    assert names(pack(root, MIB)) == ["ckpt.pt", "data/big.bin", "pkg/mod.py", "train.py"]
    assert names(pack(root, MIB, ["data/", "*.pt"])) == ["pkg/mod.py", "train.py"]


def test_pack_refuses_a_directory_over_the_limit_or_missing(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    with pytest.raises(CodeError, match="over the limit"):
        pack(root, 500)
    with pytest.raises(CodeError, match="does not exist"):
        pack(tmp_path / "nope", MIB)


def _zip(members: dict[str, bytes], link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize(("data", "why"), [
    (_zip({"/etc/cron.d/x": b"x"}), "not a relative path"),
    (_zip({"../escape.py": b"x"}), "not a relative path"),
    (_zip({"a/../../escape.py": b"x"}), "not a relative path"),
    (_zip({"c:/x.py": b"x"}), "not a relative path"),
    (_zip({"ok.py": b"x"}, link="evil"), "not a plain file"),
    (_zip({"bomb.bin": b"\0" * (2 * MIB)}), "unpacks to more than"),
    (b"PK\x03\x04 not really a zip", "not a zip file"),
])
def test_check_refuses_unsafe_or_oversized_zips(data: bytes, why: str, tmp_path: Path) -> None:
    with pytest.raises(CodeError, match=why):
        store(data, tmp_path / "code", MIB)
    assert not (tmp_path / "code").exists() or not any((tmp_path / "code").iterdir())


def test_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    data = pack(_tree(tmp_path / "src"), MIB)
    ref, files = store(data, tmp_path / "code", MIB)
    assert ref == code_id(data) and ref.startswith("sha256:") and files == 4
    assert blob_path(tmp_path / "code", ref).read_bytes() == data
    assert store(data, tmp_path / "code", MIB) == (ref, files)
    assert [p.name for p in (tmp_path / "code").iterdir()] == [f"{ref[7:]}.zip"]
    assert check(data, MIB) == 4
    with pytest.raises(CodeError, match="not a code id"):
        blob_path(tmp_path, "sha256:../../etc")
