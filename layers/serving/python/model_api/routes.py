"""Every route of the API, declared once: the Open Inference Protocol's REST routes (KServe V2,
https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol) and this
project's own.

Everything else derives from `ROUTES`: the functions' resolvers (`aws.lambda_adapter.bind_routes`),
the template's API events (`model_registry.template`), the events/ fixtures
(`model_registry.events`), docs/openapi.json (`model_registry.openapi`) and the tests. A route is
served by one kind of function: the server function (health, server metadata), each model's own
function (a model's routes, at `/v2/models/{model}` and its `/versions/{version}` twin: on its
group's API with the model's name in the path, and on the root API with `{model}`, where the
server function forwards them to the model's function, model_api.aws.router), or the batch jobs
function. Adding a per-model route is one `model_routes(...)` here, its handler in the serving
library and its tests. The batch jobs function serves the asynchronous jobs: created under a
model (`/v2/models/{model}[/versions/{version}]/jobs`), read and erased there or at
`/v2/batch/jobs/{job_id}`, on the root API.
"""

from __future__ import annotations

import re

import msgspec

SERVER = "server"
MODEL = "model"
BATCH_JOBS = "batch-jobs"
FUNCTIONS = (SERVER, MODEL, BATCH_JOBS)

GET, POST, DELETE = "GET", "POST", "DELETE"
JSON = "application/json"
HTML = "text/html"
MODEL_PATH = "/v2/models/{model}"
VERSION_PATH = MODEL_PATH + "/versions/{version}"
_PARAMETER = re.compile(r"\{([a-z_]+)\}")
TENSOR_REQUESTS = ("infer", "explain")  # bodies that are an inference request


class Route(msgspec.Struct, frozen=True):
    """One method and path of the API, and the function kind that serves it.

    `name` is the route's CloudFormation event name and the suffix of its OpenAPI operationId
    (`ModelInfer`); `operation` is the handler it calls (`infer`; a model's route and its
    versioned twin share one); `request` names the body it takes (`"infer"`, `"explain"`: an
    inference request, JSON or binary tensors, `TENSOR_REQUESTS`, whose OpenAPI schema is
    `<request>_request.<model>`; `"json"`: an optional JSON object; `"job"`: a job request;
    None: no body); `answer` is the OpenAPI schema of its success answer, whose status is
    `status`, sent as `content_type`. `keyless` routes (the console's static files, which carry
    no data) are served without the API key or IAM signature; the gateway's throttle still
    applies to them.
    """

    name: str
    operation: str
    method: str
    path: str
    function: str
    answer: str
    request: str | None = None
    summary: str = ""
    content_type: str = JSON
    keyless: bool = False
    status: int = 200

    @property
    def parameters(self) -> tuple[str, ...]:
        """The path parameters, in order: ("model", "version") for a versioned model route."""
        return tuple(_PARAMETER.findall(self.path))

    @property
    def per_model(self) -> bool:
        """Whether the path is under a model's (`/v2/models/{model}...`), the model a path
        parameter."""
        return self.path.startswith(MODEL_PATH)

    @property
    def resolver_path(self) -> str:
        """The path in the resolver's rule syntax, Powertools' (`<model>` for `{model}`;
        model_api.aws.rest)."""
        return _PARAMETER.sub(r"<\1>", self.path)

    @property
    def example(self) -> str:
        """The stem of its events/ fixture: `infer`, `version-infer`, `health-ready`."""
        words = re.findall(r"[A-Z][a-z]*", self.name)
        if words[0] == "Model":
            words = words[1:]
        return "-".join(word.lower() for word in words)

    def for_model(self, model: str) -> str:
        """The path with `{model}` filled in, as the template declares a model's routes."""
        return self.path.replace("{model}", model)

    def url(self, **parameters: str) -> str:
        """The path with every parameter filled in (values are not percent-encoded)."""
        missing = set(self.parameters) - set(parameters)
        if missing:
            raise KeyError(f"route {self.name} needs {sorted(missing)}")
        return _PARAMETER.sub(lambda match: parameters[match.group(1)], self.path)


def model_routes(operation: str, method: str, suffix: str, answer: str,
                 request: str | None = None, summary: str = "") -> tuple[Route, Route]:
    """A per-model operation's two routes, served by the model's own function: at
    `/v2/models/{model}<suffix>` and at its `/versions/{version}<suffix>` twin. (A function,
    not a table of dataclass rows: a cold start would pay for generating that class's methods.)"""
    name = operation.title().replace("_", "")
    return (Route(f"Model{name}", operation, method, MODEL_PATH + suffix, MODEL, answer, request,
                  summary),
            Route(f"Version{name}", operation, method, VERSION_PATH + suffix, MODEL, answer,
                  request, f"{summary} (a given version)"))


ROUTES: tuple[Route, ...] = (
    Route("ServerMetadata", "server_metadata", GET, "/v2", SERVER, "server_metadata",
          summary="Server metadata: name, version, protocol extensions"),
    Route("HealthLive", "live", GET, "/v2/health/live", SERVER, "server_live",
          summary="Server liveness"),
    Route("HealthReady", "ready", GET, "/v2/health/ready", SERVER, "server_ready",
          summary="Server readiness: ready when every version of every model is"),
    # The model repository extension as Triton defines it (protocol/extension_model_repository):
    # the index of every model version and its state. Models are deployed with the stack, so
    # load and unload are refused with a 400 that says so.
    Route("RepositoryIndex", "repository_index", POST, "/v2/repository/index", SERVER,
          "repository_index", request="json",
          summary="Model repository index: every model version, its state and the reason"),
    Route("RepositoryLoad", "repository_load", POST, "/v2/repository/models/{model}/load",
          SERVER, "error", request="json",
          summary="Load a model: refused (400), models are deployed with the stack"),
    Route("RepositoryUnload", "repository_unload", POST,
          "/v2/repository/models/{model}/unload", SERVER, "error", request="json",
          summary="Unload a model: refused (400), models are deployed with the stack"),
    # The console and the API's documentation, served by the server function from its console
    # layer (/opt/console): static files that carry no data, so they need no key.
    Route("Console", "console", GET, "/", SERVER, "html", content_type=HTML, keyless=True,
          summary="The console: every model, an input editor, predictions and explanations"),
    Route("Docs", "docs", GET, "/docs", SERVER, "html", content_type=HTML, keyless=True,
          summary="Swagger UI over GET /openapi.json"),
    Route("ConsoleAsset", "asset", GET, "/static/{asset}", SERVER, "static",
          content_type="*/*", keyless=True,
          summary="A static file of the console or Swagger UI (script, style sheet)"),
    Route("OpenApi", "openapi", GET, "/openapi.json", SERVER, "openapi",
          summary="This API's OpenAPI document (docs/openapi.json)"),
    # Drift reports (model_api.monitoring) are read from the capture bucket by the server
    # function, on the root API only: one API resource for every model, where a per-model route
    # would cost each group's REST API two resources per model (its 300-resource quota).
    Route("ModelMonitoring", "monitoring", GET, MODEL_PATH + "/monitoring", SERVER,
          "monitoring_report",
          summary="The model's latest drift report: the captured window against its baseline, "
                  "per feature and for the predictions (404 until one is made: daily in AWS, "
                  "`make monitor` locally)"),
    *model_routes("metadata", GET, "", "model_metadata",
                  summary="Model metadata: inputs, outputs, versions, labels"),
    *model_routes("ready", GET, "/ready", "model_ready", summary="Model readiness"),
    *model_routes("infer", POST, "/infer", "inference_response", request="infer",
                  summary="Inference"),
    *model_routes("explain", POST, "/explain", "inference_response", request="explain",
                  summary="Explanation: the outputs with attributions, base_value and target "
                          "(the model's method: linear, Kernel SHAP, occlusion or token "
                          "ablation)"),
    Route("CreateJob", "create_job", POST, MODEL_PATH + "/jobs", BATCH_JOBS, "job_created",
          request="job", summary="Create an asynchronous job: its upload URL and status URL",
          status=201),
    Route("VersionCreateJob", "create_job", POST, VERSION_PATH + "/jobs", BATCH_JOBS,
          "job_created", request="job", summary="Create an asynchronous job of a given version",
          status=201),
    Route("GetModelJob", "get_job", GET, MODEL_PATH + "/jobs/{job_id}", BATCH_JOBS, "batch_job",
          summary="A job of this model: state, progress, counts, output URLs"),
    Route("DeleteModelJob", "delete_job", DELETE, MODEL_PATH + "/jobs/{job_id}", BATCH_JOBS,
          "job_erased", summary="Erase a job of this model: stop it, delete its data"),
    Route("GetJob", "get_job", GET, "/v2/batch/jobs/{job_id}", BATCH_JOBS, "batch_job",
          summary="A batch job's state, progress, counts and output URLs"),
    Route("DeleteJob", "delete_job", DELETE, "/v2/batch/jobs/{job_id}", BATCH_JOBS,
          "job_erased", summary="Erase a batch job: stop it, delete its input, outputs, record"),
)


def routes_of(function: str) -> tuple[Route, ...]:
    """The routes one kind of function serves (SERVER, MODEL or BATCH_JOBS)."""
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function kind {function!r}; expected one of {FUNCTIONS}")
    return tuple(route for route in ROUTES if route.function == function)


def route(name: str) -> Route:
    """The route called `name` (its event name, e.g. "ModelInfer"); KeyError if none."""
    for candidate in ROUTES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no route named {name!r}")
