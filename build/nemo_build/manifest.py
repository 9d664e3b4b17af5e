"""``manifest.json``: what a build directory was made from, so a re-run with the same inputs is a no-op.

A manifest has ``inputs`` (hashes of the source and calibration set, versions, options: anything that
changes the produced files), ``files`` (sha256 of every produced file) and informational sections
(paths, timings, verification figures). A build is up to date when the stored ``inputs`` equal the new
ones and every listed file is still on disk with its hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

MANIFEST_NAME = "manifest.json"
_CHUNK = 8 << 20


def sha256_file(path: Path, progress: tqdm | None = None) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def hash_files(root: Path, names: Iterable[str], desc: str) -> dict[str, str]:
    """sha256 of each file ``root/name`` with one progress bar over their bytes."""
    root = Path(root)
    names = sorted(names)
    total = sum((root / n).stat().st_size for n in names)
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False) as bar:
        return {name: sha256_file(root / name, bar) for name in names}


def combined_sha256(file_hashes: dict[str, str]) -> str:
    """One hash for a set of named files (independent of where the directory lives)."""
    return hashlib.sha256(json.dumps(file_hashes, sort_keys=True).encode()).hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write atomically, so an interrupted build never leaves a manifest that claims success."""
    directory = Path(directory)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    target = directory / MANIFEST_NAME
    os.replace(tmp, target)
    return target


def is_up_to_date(directory: Path, inputs: dict[str, Any]) -> bool:
    """True when ``directory`` was built from exactly ``inputs`` and its files are intact."""
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("inputs") != inputs:
        return False
    files = manifest.get("files") or {}
    if not files or any(not (Path(directory) / name).is_file() for name in files):
        return False
    return hash_files(Path(directory), files, desc="checking existing build") == files
