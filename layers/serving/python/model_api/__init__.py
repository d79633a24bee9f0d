"""The shared serving library: ONNX models behind the Open Inference Protocol (KServe V2 REST).

Its core (codec, binary, datatypes, limits, errors, manifest, model, explain, examples,
service, routes, catalog, repository, console) imports only the standard library, numpy and
onnxruntime, so it runs the same in Lambda, in the local API, in a batch job and in the tools.
The AWS glue sits beside it in `model_api.aws`: the Powertools adapter (`lambda_adapter`), the
root API's router, Lambda invoke and the server's invoked repository; the core imports none of
it (tests/architecture/test_core_free_of_aws.py).
"""

# Reported by `GET /v2` (server metadata); kept equal to the project version in pyproject.toml.
__version__ = "0.1.0"
