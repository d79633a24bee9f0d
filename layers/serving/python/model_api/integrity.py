"""Files checked against the sha256 recorded for them, in one place: a model file against its
manifest (model_api.model), Kernel SHAP background rows against theirs (model_api.explain), an
added model's stored files against models.yaml (model_registry.add), an exported version before
a layer is built from it (layers/models/find_model.py) or before it is reused (model_export).

Standard library only: `sam build` imports it. Each caller words its own refusal from an
IntegrityError's `path`, `actual` and `expected`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK = 1 << 20  # bytes read at a time when hashing a file without keeping it


class IntegrityError(ValueError):
    """A file's bytes are not the ones recorded for it: `actual` is their sha256 (64 lowercase
    hex digits), `expected` the recorded one (None when none was recorded)."""

    def __init__(self, path: Path, actual: str, expected: str | None) -> None:
        super().__init__(f"{path}: sha256 is {actual} but {expected} was recorded")
        self.path = path
        self.actual = actual
        self.expected = expected


def sha256_of(data: bytes) -> str:
    """The sha256 of `data`, as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of the file at `path` (64 lowercase hex digits), read 1 MiB at a time so a
    large model is never held whole. OSError when it cannot be read."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_verified(path: Path, sha256: str | None) -> bytes:
    """The bytes of the file at `path`, once their sha256 is `sha256`: the caller then uses the
    very bytes that were checked. OSError when the file cannot be read; IntegrityError when its
    sha256 differs (or `sha256` is None)."""
    data = path.read_bytes()
    actual = sha256_of(data)
    if actual != sha256:
        raise IntegrityError(path, actual, sha256)
    return data


def read_recorded(version_dir: Path, record: object, field: str,
                  what: str) -> tuple[Path, bytes]:
    """The path and checked bytes of the file a manifest's `field` records for a version (`record`:
    {"file": a name in `version_dir`, "sha256": ...}): the Kernel SHAP background rows, the
    monitoring baseline. ValueError with the whole refusal (`what` names the file in it) when
    the record is malformed, the file cannot be read or its sha256 differs."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) \
            or Path(record["file"]).name != record["file"]:
        raise ValueError(f"{field} must name a file of the version folder with its sha256")
    path = version_dir / record["file"]
    try:
        return path, read_verified(path, record.get("sha256"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read {what}: {exc}") from exc
    except IntegrityError as exc:
        raise ValueError(f"{path}: sha256 is {exc.actual} but the manifest says "
                         f"{exc.expected}: {what} changed since the version was exported"
                         ) from None
