"""Write a directory so that readers see the old one or the new one, never a half-written one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nemo_build.errors import BuildError


def refuse_to_overwrite(out_dir: Path, force: bool) -> None:
    """BuildError unless ``out_dir`` is absent or empty, or ``force`` (the CLIs' --force) allows replacing it."""
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise BuildError(f"{out_dir} exists and is not empty; pass --force to replace it")


@contextmanager
def atomic_directory(out_dir: Path) -> Iterator[Path]:
    """A staging directory beside ``out_dir`` that replaces it in one rename when the block succeeds.

    If the block raises, ``out_dir`` is left as it was and the staging directory is removed.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
