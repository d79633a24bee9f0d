"""The Lambda runtime inside one worker process: import the handler once, then run events.

Started as `python -I -S bootstrap.py CONFIG` by local_api.worker, so sys.path holds only the
standard library until this puts the function's code, /opt/python and the runtime's packages
in front, in Lambda's order; it imports nothing from the local API, and the function sees no
package of the local API's venv. Like Lambda, it initialises once (module state persists
between invocations), runs one event at a time, and logs START / END / REPORT lines.

Protocol: one JSON document per line each way. stdin brings {"request_id", "deadline_ms",
"event"}; the real stdout carries {"result": "<handler answer as JSON>"} or {"error": {...}}.
The handler's own prints go to stderr (file descriptor 1 is pointed there), as its logs.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO


class LambdaContext:
    """The context object of Lambda's python runtime (awslambdaric's attributes)."""

    def __init__(self, request_id: str, deadline_ms: int) -> None:
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = env["AWS_LAMBDA_FUNCTION_VERSION"]
        # A string, as in awslambdaric (it reads the environment variable).
        self.memory_limit_in_mb = env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.invoked_function_arn = (f"arn:aws:lambda:{env['AWS_REGION']}:123456789012:"
                                     f"function:{self.function_name}")
        self.log_group_name = env["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def error_payload(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    """Lambda's error document for an exception (what a failed invoke returns), its stack
    trace starting below this runtime's own frame, as Lambda's does."""
    frames = exc.__traceback__.tb_next if exc.__traceback__ else None
    return {"errorMessage": str(exc), "errorType": error_type or type(exc).__name__,
            "stackTrace": traceback.format_tb(frames)}


class InitError(Exception):
    """A handler that cannot be loaded, with the error type and message Lambda gives it."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def load_handler(handler: str) -> Any:
    """Import `module.function` as awslambdaric does, with its error types and messages."""
    module_name, _, function_name = handler.rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise InitError("Runtime.ImportModuleError",
                        f"Unable to import module '{module_name}': {exc}") from exc
    except SyntaxError as exc:
        raise InitError("Runtime.UserCodeSyntaxError",
                        f"Syntax error in module '{module_name}': {exc}") from exc
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise InitError("Runtime.HandlerNotFound",
                        f"Handler '{function_name}' missing on module '{module_name}'") from None


def log_error(error: dict[str, Any]) -> None:
    """An error as Lambda logs it: one [ERROR] line, then the stack trace."""
    print(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n"
          "Traceback (most recent call last):\n" + "".join(error["stackTrace"]), file=sys.stderr)


def peak_memory_mb() -> int:
    """Peak resident memory of this process (VmHWM: ru_maxrss also counts the parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def send(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def invoke(handler: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Run one event; the answer or Lambda's error document, never an exception."""
    context = LambdaContext(request["request_id"], request["deadline_ms"])
    try:
        result = handler(request["event"], context)
    except Exception as exc:  # any handler error is the invocation's answer
        error = error_payload(exc)
        log_error(error)
        return {"error": error}
    try:
        return {"result": json.dumps(result)}
    except (TypeError, ValueError) as exc:
        return {"error": error_payload(exc, "Runtime.MarshalError")}


def main(config: dict[str, Any]) -> None:
    # Ctrl-C reaches the whole process group: the server, not its workers, decides to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.dont_write_bytecode = True  # /var/task and /opt are read-only on Lambda
    sys.path[:0] = config["python_path"]
    os.chdir(config["python_path"][0])

    started = time.perf_counter()
    try:
        handler = load_handler(os.environ["_HANDLER"])
        init_error = None
    except Exception as exc:  # reported as Lambda reports a failed init
        init_error = error_payload(exc, getattr(exc, "error_type", None))
        log_error(init_error)
    init_ms = (time.perf_counter() - started) * 1000
    send(protocol_out, {"init_ms": init_ms, "error": init_error})
    if init_error:
        return

    memory = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
    first = True
    for line in sys.stdin:
        request = json.loads(line)
        request_id = request["request_id"]
        print(f"START RequestId: {request_id} Version: $LATEST", file=sys.stderr)
        started = time.perf_counter()
        answer = invoke(handler, request)
        duration = (time.perf_counter() - started) * 1000
        used = peak_memory_mb()
        init = f"\tInit Duration: {init_ms:.2f} ms" if first else ""
        print(f"END RequestId: {request_id}\nREPORT RequestId: {request_id}\t"
              f"Duration: {duration:.2f} ms\tBilled Duration: {int(duration) + 1} ms\t"
              f"Memory Size: {memory} MB\tMax Memory Used: {used} MB{init}",
              file=sys.stderr, flush=True)
        if used > int(memory):  # not a routine line: make serve's output shows it
            print(f"WARNING RequestId: {request_id}: Max Memory Used {used} MB is over the "
                  f"function's Memory Size {memory} MB: on Lambda this invocation would end in "
                  "Runtime.OutOfMemory (the limit is not enforced locally)",
                  file=sys.stderr, flush=True)
        first = False
        send(protocol_out, answer)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
