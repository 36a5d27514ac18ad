"""Notices a new model in a directory by polling: no inotify dependency, works on any filesystem.

The signature is the manifest's and its signature file's bytes plus size and mtime of every
file it names, so a new manifest, a new signature and a model file replaced in place all
count as a change. The caller loads (and
verifies) the directory; a half-written model fails verification and is retried at the next
change, when the writer has touched the files again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from contract.model.manifest import SIGNATURE_NAME


def directory_signature(model_dir: Path) -> str:
    """A digest that changes whenever the manifest or a model file it names changes."""
    digest = hashlib.sha256()
    manifest_path = model_dir / "manifest.json"
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        return f"unreadable:{exc.errno}"
    digest.update(raw)
    try:
        digest.update((model_dir / SIGNATURE_NAME).read_bytes())
    except OSError:
        digest.update(b"unsigned")
    try:
        files = json.loads(raw).get("files", {})
        paths = sorted(str(entry.get("path", "")) for entry in files.values() if isinstance(entry, dict))
    except (ValueError, AttributeError):
        paths = []
    for rel in paths:
        try:
            st = (model_dir / rel).stat()
            digest.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            digest.update(f"{rel}:missing".encode())
    return digest.hexdigest()


class ModelDirWatch:
    """Remembers the last signature seen; `changed()` says whether it differs now."""

    def __init__(self, model_dir: Path, signature: str | None = None) -> None:
        """`signature`: the state the serving model was loaded from (taken before loading it)."""
        self.model_dir = model_dir
        self._seen = signature if signature is not None else directory_signature(model_dir)

    def follow(self, model_dir: Path, signature: str | None = None) -> None:
        """Watch another directory (after an admin swap) from its current state on."""
        self.model_dir = model_dir
        self._seen = signature if signature is not None else directory_signature(model_dir)

    def changed(self) -> bool:
        now = directory_signature(self.model_dir)
        if now == self._seen:
            return False
        self._seen = now
        return True
