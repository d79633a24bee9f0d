"""The route table (model_api.routes): the Open Inference Protocol's REST routes, once."""

from __future__ import annotations

import pytest
from model_api.routes import BATCH_JOBS, MODEL, ROUTES, SERVER, route, routes_of


def test_the_table_holds_the_protocols_routes_and_the_jobs_routes() -> None:
    # KServe V2 REST (shared/oip-v2-rest.md): health, server and model metadata, readiness and
    # inference, each model route with its /versions/{version} twin.
    # And Triton's model repository extension, the console and the API docs (server function).
    assert {(r.method, r.path) for r in routes_of(SERVER)} == {
        ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
        ("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/{model}/load"),
        ("POST", "/v2/repository/models/{model}/unload"), ("GET", "/"), ("GET", "/docs"),
        ("GET", "/static/{asset}"), ("GET", "/openapi.json"),
        # drift reports (issue 22), read from the capture bucket: on the root API only
        ("GET", "/v2/models/{model}/monitoring")}
    # Only the static files go without the key: they carry no data
    assert {r.path for r in ROUTES if r.keyless} == {"/", "/docs", "/static/{asset}"}
    assert {(r.method, r.path) for r in routes_of(MODEL)} == {
        ("GET", "/v2/models/{model}"), ("GET", "/v2/models/{model}/versions/{version}"),
        ("GET", "/v2/models/{model}/ready"), ("GET", "/v2/models/{model}/versions/{version}/ready"),
        ("POST", "/v2/models/{model}/infer"),
        ("POST", "/v2/models/{model}/versions/{version}/infer"),
        # and this API's explanations (issue 12)
        ("POST", "/v2/models/{model}/explain"),
        ("POST", "/v2/models/{model}/versions/{version}/explain")}
    # Asynchronous jobs (issue 14): created under a model, read and erased there or by id.
    assert {(r.method, r.path) for r in routes_of(BATCH_JOBS)} == {
        ("POST", "/v2/models/{model}/jobs"), ("POST", "/v2/models/{model}/versions/{version}/jobs"),
        ("GET", "/v2/models/{model}/jobs/{job_id}"), ("DELETE", "/v2/models/{model}/jobs/{job_id}"),
        ("GET", "/v2/batch/jobs/{job_id}"), ("DELETE", "/v2/batch/jobs/{job_id}")}
    assert {r.name for r in routes_of(BATCH_JOBS) if r.per_model} == {
        "CreateJob", "VersionCreateJob", "GetModelJob", "DeleteModelJob"}
    assert {r.status for r in ROUTES if r.name.endswith("CreateJob")} == {201}
    names = [r.name for r in ROUTES]
    assert len(set(names)) == len(names)
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)


def test_a_route_renders_its_forms() -> None:
    infer = route("VersionInfer")
    assert infer.parameters == ("model", "version")
    assert infer.resolver_path == "/v2/models/<model>/versions/<version>/infer"
    assert infer.for_model("m") == "/v2/models/m/versions/{version}/infer"
    assert infer.url(model="m", version="2") == "/v2/models/m/versions/2/infer"
    assert (infer.example, route("ModelInfer").example, route("HealthReady").example) == (
        "version-infer", "infer", "health-ready")
    with pytest.raises(KeyError, match="version"):
        infer.url(model="m")
    with pytest.raises(KeyError):
        route("Nope")
    with pytest.raises(ValueError, match="function kind"):
        routes_of("gpu")
