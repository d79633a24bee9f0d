"""Every limit a request meets, in one place, each with the reason for its value.

A request exactly at a limit is served; one over it is refused with the limit in the message:
413 for sizes, 400 for shape-of-document limits. Lambda's payload quota is the ceiling that
most of these derive from: 6 MB (6,291,456 bytes) for the request event and for the response.
"""

from __future__ import annotations

MiB = 1024 * 1024

# Request body, decoded. API Gateway base64-encodes every body for our `*/*` binary media type
# (4/3 growth) and the event adds headers and context, so ~4.5 MB raw is the real ceiling of a
# 6 MB Lambda event; 4 MiB (5.6 MB as base64) leaves room for the envelope.
MAX_REQUEST_BYTES = 4 * MiB

# Response body. Binary answers travel base64-encoded in the 6 MB Lambda response, so the same
# 4 MiB budget holds; refusing here gives a 413 that says why instead of Lambda's opaque 502.
MAX_RESPONSE_BYTES = 4 * MiB

# Rows (the first, batch dimension) of one input. Bounds the time of one run well inside the
# function's timeout and the size of the answer; bigger jobs belong to the batch runner.
MAX_ROWS = 10_000

# Elements of one input tensor (2**21). A 4 MiB binary FP32 body holds 2**20 elements and a
# 4 MiB JSON body at most ~2**21 ("0," per element), so no body under MAX_REQUEST_BYTES is
# refused for its element count unless it packs 1-byte binary types; it also bounds memory
# (a Python object per element while JSON is decoded).
MAX_TENSOR_ELEMENTS = 2 * MiB

# Bytes of one BYTES (string) element, UTF-8 encoded: generous for text inputs, and it keeps a
# single element from taking the whole body.
MAX_BYTES_ELEMENT = 64 * 1024

# Nesting of the JSON document (objects and arrays). A request needs 3 levels (request, inputs,
# input) plus one per dimension of nested `data`; 32 allows tensors of rank 29, far past any
# model here, and keeps hostile nesting away from the recursive JSON parser.
MAX_JSON_DEPTH = 32

# The server function's model repository (model_api.repository): it asks every model version's
# own function whether it is ready (one Lambda Invoke each). At most this many at once: the
# index of tens of models takes a few round trips, and the server's 256 MB stays enough.
REPOSITORY_INVOKE_CONCURRENCY = 8

# One readiness invocation waits at most this long (seconds): a model function's cold start
# (imports and model load, docs/performance.md) is 1-3 s; past this the version is listed as
# UNAVAILABLE with the reason, well inside the server function's own timeout.
REPOSITORY_INVOKE_TIMEOUT_S = 10

# How long (seconds) the server keeps the index it asked for: health checks every second cost
# one round of invocations every few seconds, and a deployment's change shows within this.
REPOSITORY_CACHE_S = 5
