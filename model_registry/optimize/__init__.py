"""Optimise a served model: build candidates with onnxruntime's and onnxslim's tools, measure
each against its parent in the same run, and publish the best one that passes the gate
(`make optimize MODEL=<name> [VERSION=<v>]`).

Candidates (METHODS), each from a well-kept tool rather than code of our own:

- `ort-offline`: onnxruntime's offline graph optimisation (`SessionOptions.optimized_model_filepath`
  at ORT_ENABLE_EXTENDED: ALL would add layout transformations tied to this machine's CPU).
- `onnxslim`: the onnxslim graph simplifier (constant folding, dead-node and redundancy removal).
- `dynamic-int8`: `onnxruntime.quantization.quantize_dynamic`, int8 weights, activations
  quantised at run time.
- `static-int8-qdq`: `quantize_static` in QDQ format (uint8 activations, int8 weights, the
  U8S8 form onnxruntime recommends on x86-64), MinMax ranges calibrated on the model's training
  rows through a `CalibrationDataReader`, after `quant_pre_process`.
- `fp16`: `onnxruntime.transformers.float16.convert_float_to_float16`, inputs and outputs kept
  float32. Published only when measured to help: many CPUs have no fp16 arithmetic, and
  onnxruntime then casts around every node.

Each candidate is timed against its parent, interleaved (parent, candidate, then candidate,
parent, ...), in `passes` passes of warm `session.run` calls at 1 and at 1,024 rows, with the
session options the serving library builds on Lambda (`model_api.model.session_options()` at
`lambda_memory_mb`); a latency is the median over passes of each pass's median. It is also
measured for file size, the manifest's metric on the held-back rows and on the whole dataset,
and agreement with the parent (label agreement, max |difference| of float outputs).

The gate (Gate): the metric may lose at most 0.5 percentage points (classification accuracy)
or 1 % relative (regression R² and MAE), on held-back rows and on the whole dataset; the
candidate must be at least 1.2x faster at 1 or at 1,024 rows, or at least 2x smaller; and
(added here) never more than 1.25x slower at either: without that, a quantised CNN 3x smaller
and 8x slower would pass on size (docs/performance.md). The best passing candidate (highest
geometric mean of its size and latency ratios) becomes the next version of the model, not
current: its file and manifest fields are kept in model_store/<name>/<version>/ and recorded
in models.yaml through model_registry.add, like an added model's file, so `make models`
imports the very bytes that were measured on a clean clone. Nothing passes: nothing is
published, and the table says which rule each candidate failed.
"""
