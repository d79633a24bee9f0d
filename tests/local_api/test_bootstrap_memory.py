"""The local worker (local_api/bootstrap.py) says so when an invocation used more memory than
its function's Memory Size: Lambda would have ended it (Runtime.OutOfMemory); locally the
limit is not enforced, so without this line nobody would know."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(("memory_mb", "warned"), [(16, True), (4096, False)])
def test_an_invocation_over_the_functions_memory_is_said_on_the_output(
        tmp_path: Path, memory_mb: int, warned: bool) -> None:
    (tmp_path / "hungry.py").write_text(
        "def handler(event, context):\n"
        "    data = bytearray(48 * 1024 * 1024)\n"  # 48 MB, touched: resident
        "    return {'statusCode': 200, 'body': str(len(data))}\n")
    request = {"request_id": "r-1", "deadline_ms": int(time.time() * 1000) + 30_000,
               "event": {}}
    result = subprocess.run(
        [sys.executable, str(ROOT / "local_api" / "bootstrap.py"),
         json.dumps({"python_path": [str(tmp_path)]})],
        input=json.dumps(request) + "\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "_HANDLER": "hungry.handler", "AWS_REGION": "us-east-1",
             "AWS_LAMBDA_FUNCTION_NAME": "Hungry", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
             "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/Hungry",
             "AWS_LAMBDA_LOG_STREAM_NAME": "local",
             "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb)})
    assert result.returncode == 0, result.stderr
    assert "REPORT RequestId: r-1" in result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    if warned:
        assert len(said) == 1 and f"over the function's Memory Size {memory_mb} MB" in said[0]
        assert "Runtime.OutOfMemory" in said[0]
    else:
        assert said == []
