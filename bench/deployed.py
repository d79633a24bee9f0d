"""Folders as Lambda gets them: zipped by SAM CLI's own code, then unpacked with the zip's dates.

`sam deploy` zips each function and layer with samcli's `make_zip_with_lambda_permissions`,
which writes every entry with zipfile's default date, 1980-01-01. Lambda unpacks what it is
given, so on Lambda every `.py` of a layer is dated 1980 while a timestamp-based `.pyc` (what
`compileall` writes by default) records the build's date: Python then finds every cached file
stale and compiles each module again on every cold start (it cannot write /opt). Measuring
cold starts from these unpacked copies shows what Lambda pays; measuring from the build
folders would hide it.
"""

from __future__ import annotations

import os
import tempfile
import time
import zipfile
from functools import cache
from pathlib import Path

from samcli.lib.package.utils import make_zip_with_lambda_permissions


@cache
def _zips() -> tempfile.TemporaryDirectory[str]:
    """This process's folder of zips, made on first use and removed when the process exits."""
    return tempfile.TemporaryDirectory(prefix="bench-zips-")


@cache
def sam_zip(folder: Path) -> Path:
    """`folder` zipped as `sam deploy` uploads it: once per process (the size and cold sections
    both need the runtime layer's ~35 MB zip, seconds to make), kept until the process exits."""
    zips = Path(_zips().name)
    target = zips / f"{len(os.listdir(zips))}-{folder.name}"
    return Path(make_zip_with_lambda_permissions(str(target), str(folder)))


def unpack(archive: Path, target: Path) -> Path:
    """Extract `archive` into `target`, each file dated as its zip entry says (as Lambda does)."""
    with zipfile.ZipFile(archive) as bundle:
        for entry in bundle.infolist():
            path = Path(bundle.extract(entry, target))
            stamp = time.mktime((*entry.date_time, 0, 0, -1))
            os.utime(path, (stamp, stamp))
    return target
