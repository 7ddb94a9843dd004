"""The fingerprint of a dataset, torch-free: which data a model was fit on, and whether the data
`evaluate` is pointed at is that data.

Fit stores it in the model's contract (`train.data.fingerprint`); evaluate prints the fingerprint
of the data it scored, so a reader can tell which data the numbers are about.

    file      sha256 over its size and its first and last MiB (fast for files of any size)
    folder    sha256 over the sorted relative paths and sizes of every file under it
    builtin   sha256 of its name (`builtin:digits`)

The hash does not depend on where the data lies: a copy of the training file is the training data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HEAD_BYTES = 1 << 20  # the first and the last MiB of a file are hashed


def fingerprint(path: str | Path) -> dict:
    """{path, kind, size, sha256} of a file, folder or builtin dataset (`files` too for a folder).

    `path` is resolved; a path that does not exist (or cannot be read) has only `path` and
    `kind` (`missing` or `unreadable`): the reader of the data says what is wrong with it.
    """
    text = str(path)
    if text.startswith("builtin:"):
        return {"path": text, "kind": "builtin", "sha256": hashlib.sha256(text.encode()).hexdigest()}
    p = Path(text)
    try:
        resolved = str(p.resolve())
        if p.is_file():
            return {"path": resolved, "kind": "file"} | _file(p)
        if p.is_dir():
            return {"path": resolved, "kind": "folder"} | _folder(p)
    except OSError:
        return {"path": text, "kind": "unreadable"}
    return {"path": text, "kind": "missing"}


def same_data(a: dict | None, b: dict | None) -> bool | None:
    """Whether two fingerprints name the same data; None when either has no hash to compare."""
    if not a or not b or not a.get("sha256") or not b.get("sha256"):
        return None
    return a["sha256"] == b["sha256"] and a.get("kind") == b.get("kind")


def same_path(a: str | None, b: str | None) -> bool:
    """Whether two data paths name the same file or folder (builtin names: the same name)."""
    if not a or not b:
        return False
    if a.startswith("builtin:") or b.startswith("builtin:"):
        return a == b
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def _file(path: Path) -> dict:
    size = path.stat().st_size
    digest = hashlib.sha256(f"file {size}\n".encode())
    with open(path, "rb") as f:
        digest.update(f.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            f.seek(max(HEAD_BYTES, size - HEAD_BYTES))
            digest.update(f.read(HEAD_BYTES))
    return {"size": size, "sha256": digest.hexdigest()}


def _folder(root: Path) -> dict:
    entries = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256(f"folder {len(entries)}\n".encode())
    for name, size in entries:
        digest.update(f"{name}\t{size}\n".encode())
    return {"files": len(entries), "size": sum(size for _, size in entries), "sha256": digest.hexdigest()}
