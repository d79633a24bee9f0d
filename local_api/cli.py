"""`python -m local_api serve|invoke`: the Docker-free `sam local start-api` / `sam local invoke`.

Both read the built template by default (.aws-sam/build/template.yaml, falling back to
template.yaml) with SAM CLI's own providers. Logs go to stderr; `invoke` prints only the
handler's answer (or Lambda's error document, exit status 1) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from local_api import gateway, sandbox
from local_api.background import PROJECT_ROOT
from local_api.capture import (
    CAPTURE_DIR,
    capture_environment,
    eraser_environment,
    runner_capture_environment,
)
from local_api.http11 import READ_TIMEOUT_S
from local_api.lambda_endpoint import LocalLambda
from local_api.logs import LOG_DIR, FunctionLogs
from local_api.template import TemplateSpec, default_template_path, load_template, root_api_only
from local_api.worker import (
    ACCOUNT_CONCURRENCY,
    IDLE_TIMEOUT_S,
    MAX_LIVE_WORKERS,
    MAX_WORKERS,
    FunctionError,
    FunctionPool,
    RequestTooLarge,
)

LOG = logging.getLogger("local_api")




@contextmanager
def state_folder() -> Iterator[Path]:
    """This process's own folder for the functions' merged /opt trees (symlinks only), removed
    when it stops: two local APIs, or a test run beside `make serve`, never rebuild each other's
    layers under a worker that is importing from them."""
    with tempfile.TemporaryDirectory(prefix="local-api-") as folder:
        yield Path(folder)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local_api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve every function of the template over HTTP")
    invoke = commands.add_parser("invoke", help="run one event through one function")
    for command in (serve, invoke):
        command.add_argument("--template", type=Path, default=None,
                             help=f"SAM template (default: {default_template_path()})")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--api-key", default=None,
                       help="require this x-api-key on every route (as the deployed API does)")
    serve.add_argument("--max-workers", type=int, default=MAX_WORKERS,
                       help="this machine's worker processes busy at once per function; past "
                            "it a request waits for one, in its turn, within API Gateway's "
                            "timeout (default %(default)s)")
    serve.add_argument("--account-concurrency", type=int, default=ACCOUNT_CONCURRENCY,
                       help="Lambda's concurrency limit of a function without reserved "
                            "concurrency (the account's); past it, or past a function's "
                            "ReservedConcurrentExecutions, a request is throttled as Lambda "
                            "throttles it (default %(default)s)")
    serve.add_argument("--max-live-workers", type=int, default=MAX_LIVE_WORKERS,
                       help="workers alive at once over every function: to start one more, the "
                            "idle worker unused longest is stopped (memory stays bounded with "
                            "hundreds of models; default %(default)s)")
    serve.add_argument("--capture", default="1", choices=("0", "1"),
                       help="1 (default): every model captures every request into "
                            f"{CAPTURE_DIR.relative_to(PROJECT_ROOT)}/ (make capture reads it); "
                            "0: no capture")
    serve.add_argument("--capture-dir", type=Path, default=CAPTURE_DIR,
                       help="the local capture store (default %(default)s)")
    serve.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S,
                       help="seconds an idle worker is kept before it is stopped "
                            "(default %(default)s)")
    serve.add_argument("--function-logs", default="quiet", choices=("quiet", "all"),
                       help="quiet (default): the lines every invocation writes (START/END/"
                            "REPORT, metrics, INFO records) go only to "
                            f"{LOG_DIR.relative_to(PROJECT_ROOT)}/<function>.log, every other "
                            "line to the output too; all: every line to the output too")
    serve.add_argument("--no-batch", dest="batch", action="store_false",
                       help="do not start the batch path's local AWS (S3, DynamoDB, "
                            "EventBridge on moto) for the asynchronous jobs routes")
    serve.add_argument("--root-api", action="store_true",
                       help="serve only the root stack's API, as its deployed URL does: every "
                            "model route goes through the server function to the model's "
                            "(default: every API of the deployment on one port, a group's "
                            "literal model routes first)")
    serve.add_argument("--integration-timeout", type=float, default=gateway.INTEGRATION_TIMEOUT_S,
                       help="API Gateway's integration timeout in seconds")
    serve.add_argument("--read-timeout", type=float, default=READ_TIMEOUT_S,
                       help="seconds without a byte in the middle of a request (its head or "
                            "its body) before it is answered 408 and its connection closed "
                            "(default %(default)s)")
    invoke.add_argument("function", help="logical id of the function in the template")
    invoke.add_argument("--event", "-e", default=None,
                        help="JSON event file, - for stdin (default: {})")
    return parser


def _route_table(spec: TemplateSpec) -> str:
    width = max((len(route.path) for route in spec.routes), default=0)
    return "\n".join(f"  {route.method:<7} {route.path:<{width}}  {route.function_id}"
                     for route in spec.routes)


def port_in_use(host: str, port: int) -> bool:
    """Whether `host:port` cannot be bound (as uvicorn binds it, with SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _serve(args: argparse.Namespace) -> int:
    from local_api.server import LocalApi, LocalApiOptions, serve  # uvicorn: only when serving

    # Checked before anything is set up, so the user learns it first, not after the start-up.
    if port_in_use(args.host, args.port):
        LOG.error("port %d on %s is in use (another `make serve`?): stop what serves it, or "
                  "pick another port: make serve PORT=%d", args.port, args.host, args.port + 1)
        return 2
    started = time.perf_counter()
    spec = load_template(args.template)
    if args.root_api:
        spec = root_api_only(spec)
    local_lambda = LocalLambda.create(args.host, args.port)
    os.environ.update(runner_capture_environment(args.capture, args.capture_dir))
    with state_folder() as state, \
            _batch_stack(spec, args.batch, args.capture_dir) as overrides:
        local_lambda = dataclasses.replace(local_lambda, other_key_ids=tuple(
            {found["AWS_ACCESS_KEY_ID"] for found in overrides.values()
             if "AWS_ACCESS_KEY_ID" in found}))
        given = {**local_lambda.environment(),
                 **capture_environment(args.capture, args.capture_dir)}
        sandboxes = sandbox.prepare(spec.functions.values(), state, sandbox.default_region(),
                                    given, overrides,
                                    args.capture_dir.resolve() if args.capture == "1" else None)
        api = LocalApi(spec, sandboxes, LocalApiOptions(args.api_key, args.integration_timeout,
                                                 args.max_workers, args.idle_timeout,
                                                 args.max_live_workers, local_lambda,
                                                 args.read_timeout, args.account_concurrency,
                                                 FunctionLogs(LOG_DIR,
                                                              args.function_logs == "quiet")))
        key = "x-api-key required" if args.api_key else "no API key required"
        print(f"Serving http://{args.host}:{args.port}  ({spec.template_path}, stage "
              f"{spec.stage_name}, {key}; ready in {time.perf_counter() - started:.1f} s)\n"
              f"{_route_table(spec)}\n"
              f"Console: http://{args.host}:{args.port}/   API docs: "
              f"http://{args.host}:{args.port}/docs\nCtrl-C to stop.", flush=True)
        serve(api, args.host, args.port)
    return 0


@contextmanager
def _batch_stack(spec: TemplateSpec, wanted: bool, capture_dir: Path
                 ) -> Iterator[dict[str, dict[str, str]]]:
    """The batch path's local AWS (local_api.batch.stack) while serving, when the template has its
    jobs function and `wanted`; the environment overrides of the functions that use it (the
    jobs function's capture store: `capture_dir`, local_api.capture.eraser_environment)."""
    if not wanted or "BatchJobsFunction" not in spec.functions:
        yield {}
        return
    from local_api import model_store
    from local_api.batch.stack import LocalStack  # moto: only when serving the batch path

    with LocalStack() as stack:
        print(f"Batch jobs: local S3/DynamoDB/EventBridge at {stack.endpoint}, bucket "
              f"{stack.bucket}; uploads run the runner here", flush=True)
        environments = {name: function.environment for name, function in spec.functions.items()}
        found = stack.overrides(environments)
        # Large models: the model store in the same local S3, for their functions and the
        # batch runner (a child of this process: os.environ).
        stored = model_store.publish(spec.functions.values(), stack.models_dir)
        os.environ[model_store.BUCKET_VARIABLE] = model_store.BUCKET
        if stored:
            versions = {key.rpartition("/")[0] for key in stored}
            print(f"Model store: {len(versions)} large model version(s), {len(stored)} "
                  f"object(s) in local bucket {model_store.BUCKET}: {', '.join(stored)}",
                  flush=True)
        for more in (eraser_environment(environments, capture_dir),
                     model_store.overrides(environments, stack.endpoint, stack.credentials())):
            for function, values in more.items():
                found[function] = {**found.get(function, {}), **values}
        yield found


def _read_event(source: str | None) -> Any:
    if source is None:
        return {}
    return json.loads(sys.stdin.read() if source == "-" else Path(source).read_text())


async def _invoke_once(pool: FunctionPool, event: Any) -> str:
    try:
        return await pool.invoke(event)
    finally:
        await pool.close()


def _invoke(args: argparse.Namespace) -> int:
    spec = load_template(args.template)
    function = spec.functions.get(args.function)
    if function is None:
        LOG.error("no function %s in %s; functions: %s", args.function, spec.template_path,
                  ", ".join(spec.functions) or "none")
        return 2
    with state_folder() as state:
        (box,) = sandbox.prepare([function], state, sandbox.default_region()).values()
        try:
            print(asyncio.run(_invoke_once(FunctionPool(box, 1),
                                           _read_event(args.event))))
        except FunctionError as error:
            print(json.dumps(error.payload))
            return 1
        except RequestTooLarge as error:
            LOG.error("Lambda refused the event: %s", error)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("samcli").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # credentials, endpoints
    try:
        return _serve(args) if args.command == "serve" else _invoke(args)
    except FileNotFoundError as error:
        LOG.error("%s", error)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the server took over the signals
        return 130
