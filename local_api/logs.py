"""Where the local API's child processes' log lines go: whole lines, and quiet by default.

Every child (a function's worker, the batch runner, the local S3) writes to a pipe that this
process reads line by line; `write_line` is then the only writer of this process's stderr
besides `logging`, under one lock, so no line is ever cut by another however many children
write at once (a pipe write is atomic only up to 4 KB, and a child's record may be longer).

A function's lines are kept as CloudWatch Logs keeps its log group: all of them in
`.local-api/logs/<FunctionId>.log` (`FunctionLogs.folder`). On the output, `quiet` leaves out
the lines every invocation writes (Lambda's START/END/REPORT, Powertools' metrics and its
records at INFO or DEBUG): warnings, errors, tracebacks and a handler's prints still show. The
local batch runners' lines are kept the same way in `BatchRunner.log` (their progress and
warnings show; their metrics and JSON records at INFO do not).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from local_api.background import PROJECT_ROOT

LOG_DIR = PROJECT_ROOT / ".local-api" / "logs"
# Lines every invocation writes: Lambda's own, Powertools' EMF metrics, records at INFO/DEBUG.
ROUTINE_PREFIXES = (b"START RequestId:", b"END RequestId:", b"REPORT RequestId:", b"INIT_START",
                    b'{"_aws":', b'{"level":"INFO"', b'{"level":"DEBUG"')
_LOCK = threading.Lock()


def write_line(line: bytes) -> None:
    """Write one whole line (a newline added when it has none) to this process's stderr."""
    with _LOCK:
        out = sys.stderr.buffer
        out.write(line if line.endswith(b"\n") else line + b"\n")
        out.flush()


def forward_lines(stream: IO[bytes], write: Callable[[bytes], None] = write_line) -> None:
    """Pass a child's output on to `write`, whole line by whole line, until it ends (run in a
    thread)."""
    for line in iter(stream.readline, b""):
        write(line)


def forward_in_thread(stream: IO[bytes] | None, name: str,
                      logs: FunctionLogs | None = None, function: str = "") -> None:
    """forward_lines(stream) in a daemon thread named `name` (nothing when there is none); with
    `logs`, each line goes through `logs.write(function, line)` instead (its file, and the
    output unless routine)."""
    if stream is not None:
        write = write_line if logs is None else partial(logs.write, function)
        threading.Thread(target=forward_lines, args=(stream, write), name=name,
                         daemon=True).start()


def routine(line: bytes) -> bool:
    """Whether `line` is one every invocation writes (ROUTINE_PREFIXES)."""
    return line.startswith(ROUTINE_PREFIXES)


@dataclass
class FunctionLogs:
    """Where the functions' log lines go: each to `folder`/<function>.log when a folder is set;
    to stderr unless `quiet` and routine."""

    folder: Path | None = None
    quiet: bool = False
    _files: dict[str, IO[bytes]] = field(default_factory=dict)

    def write(self, function: str, line: bytes) -> None:
        """One line of `function`'s workers."""
        if self.folder is not None:
            log = self._files.get(function)
            if log is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                log = self._files[function] = (self.folder / f"{function}.log").open("ab")
            log.write(line if line.endswith(b"\n") else line + b"\n")
            log.flush()
        if not (self.quiet and routine(line)):
            write_line(line)
