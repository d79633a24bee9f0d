"""Every limit a request meets, in one place, each with the reason for its value.

A request exactly at a limit is served; one over it is refused with the limit in the message:
413 for sizes, 400 for shape-of-document limits. Lambda's payload quota is the ceiling that
most of these derive from: 6 MB (6,291,456 bytes) for the request event and for the response.
"""

from __future__ import annotations

import msgspec

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

# One JSON Lines record (line) of a batch job. The batch runner has no event or response quota
# (it reads S3 in ranged GETs and runs in a 14 GB container, template.yaml), so a record may be
# far larger than an API request; what bounds it is memory: a line is held whole while it is
# decoded, its elements become Python objects first (about 32 bytes each), and a chunk holds
# its lines. 64 MiB (16 API requests) keeps one record under about 1 GB while decoded. A longer
# line is never held: the reader skips its bytes and gives it an error record.
BATCH_MAX_RECORD_BYTES = 64 * MiB

# Rows of one input in a batch record. A record runs as one model call (records are batched
# together, never split), so its rows bound that call's memory on the GPU; 2**20 rows is 16 to
# 1,024 times the micro-batch sizes the runner times (batch/microbatch.py). Larger work belongs
# on several lines. A record that still runs out of memory gets its own error record.
BATCH_MAX_ROWS = 1024 * 1024

# Elements of one input tensor in a batch record (2**24): what a BATCH_MAX_RECORD_BYTES line of
# JSON can hold at about 4 bytes an element ("0.5,"), and about 0.5 GB as Python objects while
# it is decoded.
BATCH_MAX_TENSOR_ELEMENTS = 16 * MiB


# An asynchronous job's input (POST /v2/models/{model}/jobs, batch.jobs_api): one object sent
# with one presigned PUT, which S3 takes up to 5 GiB (more needs a multipart upload, which one
# URL cannot make); the template's BatchMaxInputBytes may lower it. The client states the size
# when it creates the job and the URL is signed for exactly that Content-Length, since a
# presigned PUT cannot otherwise cap what is sent.
JOB_MAX_UPLOAD_BYTES = 5 * 1024**3

# How long a job's upload URL is valid: an hour sends 5 GiB at 12 Mbit/s. A URL signed with a
# function's temporary credentials also stops working when they expire, whichever comes first.
JOB_UPLOAD_URL_SECONDS = 3600

# How long the output URLs of a finished job are valid; every GET of the job signs fresh ones.
JOB_OUTPUT_URL_SECONDS = 3600

# Output URLs in one answer (about 700 bytes each as JSON: 1,000 keep it under 1 MB, far inside
# the 4 MiB response budget). A JSON Lines job writes a part per 8 MiB of input, so 1,000 parts
# cover about 8 GB of input; `?start=N` pages through more.
JOB_MAX_OUTPUT_URLS = 1000

# A job request's body, and its `parameters` as stored with the job (a DynamoDB item is at most
# 400 KB; the parameters are the client's own attributes, returned as sent).
JOB_MAX_REQUEST_BYTES = 64 * 1024
JOB_MAX_PARAMETERS_BYTES = 16 * 1024


class RequestLimits(msgspec.Struct, frozen=True):
    """The limits one infer request meets on a path, and how its refusals name it there."""

    unit: str  # what one request is called in messages
    max_bytes: int
    max_rows: int
    max_tensor_elements: int
    binary: bool  # whether binary tensor data (inputs after the JSON, binary outputs) travels
    bigger: str  # where a request over max_rows should go instead
    # The answer's bounds: its largest encoded size (None: none of its own) and how to receive
    # the NaN or infinite outputs that JSON cannot carry on this path.
    max_answer_bytes: int | None
    nonfinite: str
    # Seconds of model time an explanation may take (None: no bound): over it, a 413 saying how
    # to get it instead, never a gateway timeout (model_api.model.LoadedModel.explain).
    explain_seconds: float | None = None


# Seconds of model time one /explain may spend on the API: under the functions' 15 s timeout
# (ModelTimeout's default) with room for decoding, the summary and encoding.
API_EXPLAIN_SECONDS = 10.0
# An API request (Lambda behind API Gateway).
API_REQUEST = RequestLimits("request", MAX_REQUEST_BYTES, MAX_ROWS, MAX_TENSOR_ELEMENTS,
                            binary=True,
                            bigger="split it, or send it as an asynchronous job: POST .../jobs",
                            max_answer_bytes=MAX_RESPONSE_BYTES,
                            nonfinite="ask for the output with parameters.binary_data: true to "
                                      "receive them",
                            explain_seconds=API_EXPLAIN_SECONDS)
# A JSON Lines record (line) of a batch job: JSON only (a line has no room for a binary tail,
# and its answer is a JSON line; a .npy input is the batch path's binary form). Its answer is
# one line of the job's output, bounded by nothing but the rows the record may hold.
BATCH_RECORD = RequestLimits("JSON Lines record", BATCH_MAX_RECORD_BYTES, BATCH_MAX_ROWS,
                             BATCH_MAX_TENSOR_ELEMENTS, binary=False,
                             bigger="split it over several lines", max_answer_bytes=None,
                             nonfinite="a .npy input gives .npy outputs, which carry them")
# The server function's model repository (model_api.aws.invoked_repository): it asks every
# model version's own function whether it is ready (one Lambda Invoke each). At most this many
# at once: a deployment of 500 models is 8 rounds, a few seconds warm; each thread waits on the
# network, so the server's 256 MB stays enough.
REPOSITORY_INVOKE_CONCURRENCY = 64

# The whole index waits at most this long (seconds), within the server function's own Timeout
# (ModelTimeout, 15 s by default) and API Gateway's 29 s: a version whose function has not
# answered by then (a cold start among hundreds) is listed UNAVAILABLE with that reason.
REPOSITORY_INDEX_DEADLINE_S = 10

# The server's readiness while only large models are still loading from the model store is a
# 503 with this Retry-After (seconds): a load takes seconds (docs/performance.md, Large models).
LOADING_RETRY_AFTER_S = 5

# One readiness invocation waits at most this long (seconds): a model function's cold start
# (imports and model load, docs/performance.md) is 1-3 s; past this the version is listed as
# UNAVAILABLE with the reason, well inside the server function's own timeout.
REPOSITORY_INVOKE_TIMEOUT_S = 10

# How long (seconds) the server keeps the index it asked for: health checks every second cost
# one round of invocations every few seconds, and a deployment's change shows within this. A
# version still LOADING is asked again at every call (model_api.aws.invoked_repository).
REPOSITORY_CACHE_S = 5

# The root API's model routes (model_api.aws.router): the server function waits this long (seconds)
# for the model function it forwards a request to; API Gateway gives up at 29 s anyway, and the
# server function's own Timeout (ModelTimeout) bounds it first.
ROUTER_INVOKE_TIMEOUT_S = 30
# --- explanations (`/explain`, model_api/explainers/) -------------------------------------
# Rows of one explain request. Explaining a row costs up to MAX_EXPLAIN_MODEL_ROWS / rows model
# evaluations (Kernel SHAP: ~8,000 per breast-cancer row by default, ~10 ms on one core), so 64
# rows stay near one second; bigger jobs belong to the batch runner ("explain": true).
MAX_EXPLAIN_ROWS = 64

# Rows the model evaluates for one explain request, all methods together (coalitions x
# background rows per row for Kernel SHAP, occluded copies, ablated texts). 2**20 rows of the
# breast-cancer MLP take 1.5-2.5 s on one core, inside the function's timeout.
MAX_EXPLAIN_MODEL_ROWS = 2**20

# Model rows in one session.run of Kernel SHAP. One row's coalitions x background rows are
# scored in one run up to this size (8,192 for the seeds), in several past it: a run's
# activations grow with its rows (131,072 rows x 128 hidden units x FP32 = 64 MiB per layer of
# the breast-cancer MLP), and a 1,024 MB function must not run out of memory on a large
# `samples` with a large background.
MAX_EXPLAIN_RUN_ROWS = 2**17

# Kernel SHAP coalitions per row (`parameters.samples`): 8,192 exceeds 2^13 - 2, so a model of
# up to 13 features can ask for the exact answer; past that a sample's error shrinks as
# 1/sqrt(samples) and the cost grows linearly.
MAX_SHAP_SAMPLES = 8192

# Background rows shipped with a Kernel SHAP model (make add-model BACKGROUND=...). Every
# coalition is scored against each of them: cost is linear in the count, and the base value's
# error falls as 1/sqrt(rows) (shap's docs suggest 10-100 summarised rows).
MAX_BACKGROUND_ROWS = 100

# Tokens of one text under token ablation: each is one more model evaluation, and the answer
# carries a token and an attribution per token. Over the limit: 413 (never truncated).
MAX_EXPLAIN_TOKENS = 512
