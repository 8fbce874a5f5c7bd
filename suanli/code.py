"""Shipped code: a job's directory, zipped by the CLI, uploaded once to the API, run on Ray.

A center without a filesystem shared with its users cannot run `working_dir: /home/me/x`:
the user's directory is on their laptop. `code: ./dir` in a spec (or `suanli run --code
DIR`) makes the CLI zip the directory (`pack`) and upload it (`POST /v1/code`); the API
checks and stores it (`store`), content-addressed, and the spec then carries its id
(`sha256:<hex>`). The scheduler hands the zip to Ray as the runner's runtime_env
`working_dir`, so each server gets a private, unpacked copy and the command runs in it.

Invariants:
- A code id is `sha256:` + the hex SHA-256 of the zip's bytes; the blob is stored at
  `<code_dir>/<hex>.zip`, written atomically (temporary file, then rename), never changed.
- `check` accepts only a well-formed zip whose members are relative paths inside the
  directory (no absolute path, no `..`, no backslash, no drive letter, no symlink or device),
  at most `MAX_MEMBERS` of them, whose *unpacked* size is at most the limit (a zip bomb is
  refused before anything is unpacked). Anything else is a `CodeError` with one line saying why.
- `pack` leaves out `DEFAULT_EXCLUDES` plus the user's patterns (fnmatch on the path relative
  to the directory and on each path component), follows no symlink out of the directory,
  and refuses a directory over the limit before uploading anything.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import stat
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

DEFAULT_EXCLUDES = (".git", "__pycache__", "*.pyc", ".venv")
MAX_MEMBERS = 100_000
CODE_ID = re.compile(r"^sha256:([0-9a-f]{64})$")


class CodeError(ValueError):
    """Refused code (too large, not a zip, unsafe member …); the message is one line."""


def code_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(code_dir: Path, ref: str) -> Path:
    """Where the code `ref` is stored (`ref` must be a code id)."""
    m = CODE_ID.match(ref)
    if not m:
        raise CodeError(f"{ref!r} is not a code id (sha256:<64 hex digits>)")
    return code_dir / f"{m.group(1)}.zip"


def _excluded(rel: str, patterns: Iterable[str]) -> bool:
    parts = rel.split("/")
    for p in patterns:
        p = p.rstrip("/")
        if fnmatch.fnmatch(rel, p) or any(fnmatch.fnmatch(part, p) for part in parts):
            return True
    return False


def _files(root: Path, patterns: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: links are not walked into
        base = Path(dirpath)
        rel_dir = base.relative_to(root).as_posix()
        dirnames[:] = sorted(d for d in dirnames if not _excluded(f"{rel_dir}/{d}".lstrip("./") if rel_dir != "." else d,
                                                                   patterns) and not (base / d).is_symlink())
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            path = base / name
            if _excluded(rel, patterns) or path.is_symlink() or not path.is_file():
                continue
            yield path, rel


def pack(directory: Path, limit_bytes: int, excludes: Iterable[str] = ()) -> bytes:
    """The directory as a zip (deflated), without the excluded paths. Raises `CodeError`
    when it is not a directory or its files add up to more than `limit_bytes`."""
    root = directory.resolve()
    if not root.is_dir():
        raise CodeError(f"code directory {directory} does not exist or is not a directory")
    patterns = (*DEFAULT_EXCLUDES, *excludes)
    buf = io.BytesIO()
    total = 0
    count = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, rel in _files(root, patterns):
            total += path.stat().st_size
            count += 1
            if total > limit_bytes:
                raise CodeError(f"code directory {directory} is over the limit of {limit_bytes // (1024 * 1024)} MiB "
                                "(leave data out with excludes)")
            if count > MAX_MEMBERS:
                raise CodeError(f"code directory {directory} has more than {MAX_MEMBERS} files")
            info = zipfile.ZipInfo.from_file(path, rel)
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as f:
                z.writestr(info, f.read())
    return buf.getvalue()


def check(data: bytes, limit_bytes: int) -> int:
    """Validate an uploaded zip (see the module's invariants); returns its member count."""
    if len(data) > limit_bytes:
        raise CodeError(f"code is over the limit of {limit_bytes} bytes")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CodeError(f"code is not a zip file ({e})") from e
    if len(infos) > MAX_MEMBERS:
        raise CodeError(f"code has more than {MAX_MEMBERS} files")
    unpacked = 0
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if (not name or name.startswith("/") or "\\" in name or ":" in parts[0] or ".." in parts
                or "\x00" in name):
            raise CodeError(f"code member {name!r} is not a relative path inside the directory")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded (a plain file)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise CodeError(f"code member {name!r} is not a plain file or directory (links are not shipped)")
        unpacked += info.file_size
        if unpacked > limit_bytes:
            raise CodeError(f"code unpacks to more than {limit_bytes} bytes")
    return len(infos)


def store(data: bytes, code_dir: Path, limit_bytes: int) -> tuple[str, int]:
    """Check and keep the zip; returns (its code id, member count). Idempotent."""
    files = check(data, limit_bytes)
    ref = code_id(data)
    path = blob_path(code_dir, ref)
    if not path.exists():
        code_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return ref, files
