"""One cold start in a fresh interpreter, timed from inside: run as a script, never imported.

`python -I -S cold_probe.py CONFIG.json` starts with only the standard library on sys.path
(as Lambda's runtime does), puts the function's code and layers in front, then either imports
the handler module exactly as Lambda would and answers one event ("handler"), or does the bare
minimum a model needs ("baseline": import onnxruntime and numpy, create a session, run it), or
that minimum inside the observability every function keeps ("floor": Powertools' Logger,
Tracer with the X-Ray SDK and Metrics, made as model_api.aws.lambda_adapter makes them, their
three decorators around the run): what no handler with those libraries can go below.
Each phase's end is a time.perf_counter() stamp (CLOCK_MONOTONIC, shared by every process),
so the parent can count from the moment it spawned this process. Results go to a file: stdout
belongs to the handler's logs. The probe itself imports only what Lambda's own runtime
loop has loaded before it imports a handler (json, importlib), so both modes pay alike.
"""

import time

STARTED = time.perf_counter()

import importlib  # noqa: E402 - the stamp above must come first
import json  # noqa: E402
import sys  # noqa: E402


class Context:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name = "cold-start"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cold-start"
    log_group_name = "/aws/lambda/cold-start"
    log_stream_name = "cold-start"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def handler(config: dict) -> dict:
    """Imports, then the module's own init (model load), then one event through the handler."""
    module_name, _, function_name = config["handler"].rpartition(".")
    for name in config["imports"]:
        importlib.import_module(name)
    imported = time.perf_counter()
    module = importlib.import_module(module_name)
    initialised = time.perf_counter()
    answer = getattr(module, function_name)(config["event"], Context())
    answered = time.perf_counter()
    return {"status": answer["statusCode"], "imported": imported, "initialised": initialised,
            "answered": answered}


def session_of(config: dict) -> object:
    """A session with default options on the model file (None for the server function)."""
    import onnxruntime

    if not config.get("model_file"):
        return None
    return onnxruntime.InferenceSession(config["model_file"], providers=["CPUExecutionProvider"])


def run_once(session: object, config: dict) -> None:
    """One run of `session` on the event's inputs (nothing without a session)."""
    import numpy

    if session is not None:
        feeds = {name: numpy.array(tensor["data"], dtype=tensor["dtype"]).reshape(tensor["shape"])
                 for name, tensor in config["inputs"].items()}
        session.run(None, feeds)  # type: ignore[attr-defined]


def baseline(config: dict) -> dict:
    """import onnxruntime, numpy; a session with default options; one run on the same input."""
    import numpy  # noqa: F401 - what the baseline measures
    import onnxruntime  # noqa: F401

    imported = time.perf_counter()
    session = session_of(config)
    initialised = time.perf_counter()
    run_once(session, config)
    return {"status": 200, "imported": imported, "initialised": initialised,
            "answered": time.perf_counter()}


def floor(config: dict) -> dict:
    """The baseline's work inside Powertools' three decorators, as the handlers wear them."""
    import numpy  # noqa: F401 - what the baseline measures
    import onnxruntime  # noqa: F401
    from aws_lambda_powertools import Logger, Metrics, Tracer
    from aws_lambda_powertools.logging import correlation_paths

    logger, tracer, metrics = Logger(), Tracer(auto_patch=False), Metrics()
    imported = time.perf_counter()
    session = session_of(config)
    initialised = time.perf_counter()

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handle(event: dict, context: Context) -> dict:
        run_once(session, config)
        return {"statusCode": 200}

    handle(config["event"], Context())
    return {"status": 200, "imported": imported, "initialised": initialised,
            "answered": time.perf_counter()}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would count the parent's too)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    with open(sys.argv[1]) as file:
        config = json.load(file)
    sys.path[:0] = config["python_path"]
    result = {"handler": handler, "baseline": baseline, "floor": floor}[config["mode"]](config)
    result["started"] = STARTED
    result["max_rss_mb"] = peak_rss_mb()
    with open(config["result_file"], "w") as file:
        json.dump(result, file)


main()
