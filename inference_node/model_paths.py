"""Confines served models to the configured models root.

An admin swap names a directory; whoever can publish on the admin topic must not be able to
point the node at `/tmp/evil` or `../../home/x`, nor at a symlink inside the root that leads
out of it. Names are relative to the root, and every load re-checks the resolved path (a
symlink may have changed since the request).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from contract.model.manifest import ManifestError


def swap_target(models_root: Path, requested: str) -> Path:
    """The directory an admin swap names, as a path under `models_root`; ManifestError if it is not one."""
    pure = PurePosixPath(requested)
    if pure.is_absolute() or "\\" in requested or ".." in pure.parts or requested.startswith("~"):
        raise ManifestError(f"model_dir {requested!r} must be a name relative to the models root, without '..'")
    if not pure.parts or pure.parts == (".",):
        raise ManifestError(f"model_dir {requested!r} names the models root itself, not a model directory")
    return confined(models_root, models_root / pure)


def confined(models_root: Path, model_dir: Path) -> Path:
    """`model_dir` itself if it resolves (symlinks followed) inside `models_root`; ManifestError otherwise."""
    root = models_root.resolve()
    resolved = model_dir.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise ManifestError(f"model directory {model_dir} resolves to {resolved}, outside the models root {root}")
    return model_dir
