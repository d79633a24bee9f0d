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

# --- explanations (`/explain`, model_api/explain.py) -------------------------------------
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
