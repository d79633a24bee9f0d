"""The .npy format of a batch job: a single-input model's rows in, one .npy per output out.

The rows are checked against the model's signature once, on the file's header; each chunk of
rows is then one exchange of the serving library's pipeline (model_api.pipeline), run in
micro-batches (batch.microbatch.MicroBatcher.run_rows) between the pipeline's hooks. No
per-row Python: rows are read, cast and run as arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from model_api.catalog import npy_refusal
from model_api.datatypes import numpy_dtype
from model_api.manifest import TensorSpec
from model_api.model import LoadedModel
from model_api.pipeline import Pipeline

from batch.failures import PermanentError
from batch.microbatch import MicroBatcher
from batch.reader import NpyLayout


def input_spec(layout: NpyLayout, model: LoadedModel) -> TensorSpec:
    """The model input that the .npy rows feed, checked on the file's header before any row
    runs. PermanentError when the model has several inputs, a BYTES (text) input or output
    (a .npy holds numbers; its outputs are .npy files too), or the rows' trailing shape or
    dtype do not fit the input."""
    name = model.manifest.name
    refused = npy_refusal(model.manifest)
    if refused is not None:
        raise PermanentError(refused)
    spec = model.manifest.inputs[0]
    wanted = tuple(spec.shape[1:])
    got = layout.shape[1:]
    if len(got) != len(wanted) or any(w not in (-1, g) for w, g in zip(wanted, got,
                                                                        strict=True)):
        raise PermanentError(f".npy rows have shape {list(got)}; input {spec.name!r} of "
                             f"{name} takes rows of shape {list(wanted)}")
    target = np.dtype(numpy_dtype(spec.datatype))
    if not np.can_cast(layout.dtype, target, "same_kind"):
        raise PermanentError(f".npy dtype {layout.dtype} cannot be cast to {spec.datatype}")
    return spec


def chunk_rows(rows: int, max_bytes: int, row_bytes: int) -> int:
    """Rows per chunk of a .npy input: the row limit or as many rows as fit the byte limit
    (at least one), whichever is fewer; 0 (the whole file) when neither limit is set."""
    by_bytes = max(1, max_bytes // max(1, row_bytes)) if max_bytes else 0
    return min((limit for limit in (rows, by_bytes) if limit), default=0)


def predict_rows(pipeline: Pipeline, batcher: MicroBatcher, spec: TensorSpec,
                rows: np.ndarray) -> Mapping[str, np.ndarray]:
    """Every output of the model for `rows` (cast to the input's dtype), in micro-batches;
    raises what the model raises once micro-batches of one row still fail."""
    typed = rows.astype(numpy_dtype(spec.datatype), copy=False)
    exchange = pipeline.from_arrays(batcher.model, {spec.name: typed})
    return pipeline.predict_with(exchange, batcher.run_rows).results
