"""Read the SAM template with SAM CLI's own providers (the ones `sam local start-api` uses).

Reusing them means Globals, `Ref` to Parameters with defaults, the API's routes and binary media
types and the layers' code locations are resolved exactly as SAM CLI resolves them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

GatewayResponses = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class FunctionSpec:
    """What a worker needs to run one function as Lambda would."""

    logical_id: str
    function_name: str
    handler: str
    runtime: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    environment: dict[str, str]
    timeout: int
    memory_size: int
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions, when a number
    stack_path: str = ""  # the nested stack that declares it ("" for the root, ModelsGroup0)


@dataclass(frozen=True)
class RouteSpec:
    """One API Gateway resource + method bound to a function."""

    method: str
    path: str
    function_id: str
    operation_name: str | None = None
    api_key_required: bool = True


@dataclass
class TemplateSpec:
    """Everything the local API serves, read once at start-up."""

    template_path: Path
    functions: dict[str, FunctionSpec]
    routes: list[RouteSpec]
    binary_media_types: list[str]
    stage_name: str
    stage_variables: dict[str, str] | None
    gateway_responses: GatewayResponses = field(default_factory=dict)
    # The API's MinimumCompressionSize (bytes), None when compression is off.
    minimum_compression_size: int | None = None


def default_template_path() -> Path:
    """The built template when `sam build` ran (as `sam local start-api`), else the source one."""
    built = Path(".aws-sam/build/template.yaml")
    return built if built.exists() else Path("template.yaml")


def _resolve_dir(uri: str | None, base: Path) -> Path:
    if not uri:
        return base
    path = Path(uri)
    return (path if path.is_absolute() else base / path).resolve()


# Variables whose deployed value (a Ref to a deployed resource) the local API replaces with its
# own: data capture's bucket and hash key secret (local_api.capture.capture_environment), the
# model store's bucket (local_api.model_store).
SET_LOCALLY = frozenset({"CAPTURE_BUCKET", "CAPTURE_HASH_KEY_SECRET", "MODEL_STORE_BUCKET"})


def _string_env(variables: dict[str, Any] | None) -> dict[str, str]:
    """Lambda only has string environment values; the template may hold numbers and booleans."""
    out: dict[str, str] = {}
    for key, value in (variables or {}).items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, dict | list) and key in SET_LOCALLY:
            out[key] = ""  # the local API gives its own value (local_api.cli)
        elif isinstance(value, dict | list):
            LOG.warning("environment variable %s is unresolved (%r); left empty", key, value)
            out[key] = ""
        else:
            out[key] = str(value)
    return out


def _gateway_responses(resources: dict[str, Any]) -> GatewayResponses:
    """Both SAM's `GatewayResponses` on an Api and plain AWS::ApiGateway::GatewayResponse."""
    found: GatewayResponses = {}
    for resource in resources.values():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Api":
            for rtype, response in (props.get("GatewayResponses") or {}).items():
                params = (response.get("ResponseParameters") or {}).get("Headers") or {}
                found.setdefault(rtype, {
                    "StatusCode": response.get("StatusCode"),
                    "ResponseTemplates": response.get("ResponseTemplates") or {},
                    "Headers": dict(params),
                })
        elif resource.get("Type") == "AWS::ApiGateway::GatewayResponse":
            params = props.get("ResponseParameters") or {}
            prefix = "gatewayresponse.header."
            found.setdefault(props.get("ResponseType", ""), {
                "StatusCode": props.get("StatusCode"),
                "ResponseTemplates": props.get("ResponseTemplates") or {},
                "Headers": {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)},
            })
    return found


def _whole_number(value: Any) -> int | None:
    """A template value that is a plain whole number (an unresolved intrinsic is None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _api_property(resources: dict[str, Any], name: str) -> Any:
    """A property of the template's AWS::Serverless::Api or AWS::ApiGateway::RestApi."""
    for resource in resources.values():
        if resource.get("Type") in ("AWS::Serverless::Api", "AWS::ApiGateway::RestApi"):
            value = (resource.get("Properties") or {}).get(name)
            if value is not None:
                return value
    return None
def _keyless_routes(stacks: list[Any]) -> set[tuple[str, str]]:
    """(method, path) of the Api events with `Auth: {ApiKeyRequired: false}` (SAM's providers
    do not carry it; `sam local start-api` checks no key at all)."""
    found = set()
    for stack in stacks:
        for resource in stack.resources.values():
            if resource.get("Type") != "AWS::Serverless::Function":
                continue
            for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
                props = event.get("Properties") or {}
                auth = props.get("Auth")
                if (event.get("Type") == "Api" and isinstance(auth, dict)
                        and auth.get("ApiKeyRequired") is False):
                    found.add((str(props.get("Method", "")).upper(), str(props.get("Path", ""))))
    return found


def load_template(template: str | os.PathLike[str] | None = None,
                  parameter_overrides: dict[str, str] | None = None) -> TemplateSpec:
    """Read functions, routes, binary media types and gateway responses of a SAM template."""
    # Imported here: SAM CLI takes about a second to import, `--help` should not pay it.
    from samcli.lib.providers.api_provider import ApiProvider
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

    path = Path(template) if template else default_template_path()
    if not path.is_file():
        raise FileNotFoundError(f"template not found: {path}")
    path = path.resolve()
    stacks, _ = SamLocalStackProvider.get_stacks(
        str(path), parameter_overrides=parameter_overrides or {})
    # Code paths are relative to the template that names them: a nested stack's own folder.
    bases = {stack.stack_path: Path(stack.location).resolve().parent for stack in stacks}

    functions: dict[str, FunctionSpec] = {}
    # As `sam local invoke` reads them: a function's layers are those its own stack declares
    # (a layer passed down to a nested stack as a parameter would be taken for an ARN), which is
    # why every group of models declares the shared layers itself.
    provider = SamFunctionProvider(stacks, use_raw_codeuri=True)
    for fn in provider.get_all():
        base = bases.get(fn.stack_path, path.parent)
        if fn.packagetype != "Zip" or not (fn.runtime or "").startswith("python"):
            LOG.warning("%s: only Zip python functions run locally (runtime %s, package %s); "
                        "skipped", fn.name, fn.runtime, fn.packagetype)
            continue
        layers = []
        for layer in fn.layers:
            if not layer.codeuri:
                LOG.warning("%s: layer %s is not in the template (an ARN); it cannot be fetched "
                            "offline and is left out", fn.name, layer.arn)
                continue
            layers.append(_resolve_dir(layer.codeuri, bases.get(layer.stack_path, base)))
        functions[fn.name] = FunctionSpec(
            logical_id=fn.name,
            function_name=fn.functionname or fn.name,
            handler=fn.handler or "",
            runtime=fn.runtime or "python3.12",
            code_dir=_resolve_dir(fn.codeuri, base),
            layer_dirs=tuple(layers),
            environment=_string_env((fn.environment or {}).get("Variables")),
            timeout=int(fn.timeout or 3),
            memory_size=int(fn.memory or 128),
            reserved_concurrency=next(
                (_whole_number(((stack.resources.get(fn.name) or {}).get("Properties") or {})
                               .get("ReservedConcurrentExecutions")) for stack in stacks
                 if fn.name in stack.resources), None),
            stack_path=fn.stack_path,
        )

    api = ApiProvider(stacks).api
    keyless = _keyless_routes(stacks)
    routes = []
    for route in api.routes:
        if route.function_name not in functions:
            LOG.warning("route %s %s: function %s cannot run locally; skipped",
                        route.methods, route.path, route.function_name)
            continue
        for method in route.methods:
            routes.append(RouteSpec(method.upper(), route.path, route.function_name,
                                    route.operation_name,
                                    (method.upper(), route.path) not in keyless))
    compression = next((_whole_number(_api_property(stack.resources, "MinimumCompressionSize"))
                        for stack in stacks), None)
    responses: GatewayResponses = {}
    for stack in stacks:
        for rtype, response in _gateway_responses(stack.resources).items():
            responses.setdefault(rtype, response)
    return TemplateSpec(
        template_path=path,
        functions=functions,
        routes=sorted(routes, key=lambda r: (r.path, r.method)),
        binary_media_types=list(api.binary_media_types or []),
        stage_name=api.stage_name or "Prod",
        stage_variables=api.stage_variables or None,
        gateway_responses=responses,
        minimum_compression_size=compression,
    )


def root_api_only(spec: TemplateSpec) -> TemplateSpec:
    """`spec` with only the root stack's routes (what the deployed root ApiUrl serves): a model
    route is then the root API's `/v2/models/{model}/...`, which the server function forwards to
    the model's function (model_api.aws.router), instead of the group API's literal route. Every
    function still runs: the forwarded invocations reach them."""
    root = {name for name, function in spec.functions.items() if not function.stack_path}
    return replace(spec, routes=[route for route in spec.routes if route.function_id in root])
