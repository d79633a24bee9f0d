"""The shared serving library: ONNX models behind the Open Inference Protocol (KServe V2 REST).

Its core imports only the standard library, numpy and onnxruntime, so it runs the same in
Lambda, in the local API and in a batch job; only `lambda_adapter` knows about AWS.
"""

# Reported by `GET /v2` (server metadata); kept equal to the project version in pyproject.toml.
__version__ = "0.1.0"
