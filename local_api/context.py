"""Lambda's context object for running a handler in-process: the tests, the local batch loop
(`make batch-local`) and `make bench` call handlers directly, with no worker process. (The
local API's workers build theirs from the function's environment in bootstrap.py, which must
import nothing of this package.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name: str = "local"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    memory_limit_in_mb: int = 1024
    remaining_ms: int = 15_000
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
