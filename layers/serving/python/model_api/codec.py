"""Open Inference Protocol requests and responses <-> numpy, checked against a manifest.

Every request is checked in full before the model sees it: its fields, each input's name,
datatype and shape against the manifest, every data element's kind and range, and the limits
of `limits.py`. Checks are vectorised where they can be (one `set(map(type, ...))` pass and one
numpy conversion per tensor) because this runs on every request and most requests are small.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import orjson

from model_api.binary import (
    HEADER_LENGTH,
    decode_tensor,
    encode_tensor,
    header_length,
    raw_shape,
    raw_tensor,
    split_body,
)
from model_api.datatypes import BY_NAME, BYTES, ROWS, is_float, numpy_dtype
from model_api.errors import BadRequest, NotFound, TooLarge
from model_api.limits import (
    API_REQUEST,
    MAX_BYTES_ELEMENT,
    MAX_JSON_DEPTH,
    RequestLimits,
)
from model_api.manifest import Manifest, TensorSpec

JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"

_REQUEST_FIELDS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_FIELDS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_FIELDS = frozenset({"name", "parameters"})

class RequestedOutput(msgspec.Struct, frozen=True):
    """An output to return; `binary` sends it as binary tensor data after the JSON."""

    name: str
    binary: bool


# eq=False: its arrays have no one truth value to compare (compared by identity).
class InferRequest(msgspec.Struct, frozen=True, eq=False):
    """A request that fits the manifest: arrays of the manifest's dtypes, outputs resolved."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...]
    parameters: dict[str, Any]
    rows: int


class InferResult(msgspec.Struct, frozen=True):
    """An encoded answer; `headers` carry Content-Type (and the binary header length)."""

    body: bytes
    headers: dict[str, str]
    rows: int


# --- requests -------------------------------------------------------------------------------


def decode_request(body: bytes, headers: Mapping[str, str], manifest: Manifest,
                   limits: RequestLimits = API_REQUEST,
                   choose: Callable[[Mapping[str, Any]], Manifest] | None = None
                   ) -> InferRequest:
    """The checked request in `body`; a ModelAPIError says what to fix if it does not fit.

    `limits`: the path's (limits.API_REQUEST, or BATCH_RECORD for a line of a batch job, which
    refuses binary tensor data and binary outputs, as its answer is a JSON line). `choose`,
    given the request's `parameters`, returns the manifest its outputs are resolved against
    (a batch record's `explain` flag adds the explanation's outputs); default `manifest`.

    The common request (JSON, numeric, BOOL or BYTES tensors, flat or nested data) is decoded by
    `_decode_common`, which answers only a request it has proved valid; anything else, and
    every request it declines, is decoded by `decode_request_checked`, whose errors (and their
    order) are the codec's messages.
    """
    decoded = _decode_common(body, headers, manifest, limits, choose)
    if decoded is not None:
        return decoded
    return decode_request_checked(body, headers, manifest, limits, choose)


def decode_request_checked(body: bytes, headers: Mapping[str, str], manifest: Manifest,
                           limits: RequestLimits = API_REQUEST,
                           choose: Callable[[Mapping[str, Any]], Manifest] | None = None
                           ) -> InferRequest:
    """decode_request, every check one after the other in the order of its messages: what
    decode_request falls back to, and the reference its fast path is tested against
    (tests/unit/test_codec_fast.py). Same arguments, result and errors."""
    if len(body) > limits.max_bytes:
        raise TooLarge(
            f"the {limits.unit} body is {len(body)} bytes; the limit is {limits.max_bytes} "
            f"bytes (send fewer rows per {limits.unit})"
        )
    length = header_length(_header(headers, HEADER_LENGTH))
    if length == 0:
        return _raw_request(body, manifest, limits, choose)
    json_part, tail = split_body(body, length)
    document = parse_json(json_part)
    if not isinstance(document, dict):
        raise BadRequest(
            f"the request must be a JSON object with 'inputs', got {_describe(document)}"
        )
    _check_fields("the request", document, {"inputs"}, _REQUEST_FIELDS)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"'id' must be a string, got {_describe(request_id)}")
    parameters = _parameters(document.get("parameters"), "the request")
    if choose is not None:
        manifest = choose(parameters)
    binary_default = _flag(parameters, "binary_data_output", "the request")
    outputs = _outputs(document.get("outputs"), manifest, binary_default)
    binary = [output.name for output in outputs if output.binary]
    if binary and not limits.binary:
        raise BadRequest(
            f"output(s) {_quoted(binary)} asked for as binary data (binary_data_output or "
            f"binary_data): the answer to a {limits.unit} is JSON, so drop the flag (a .npy "
            "input gives .npy outputs)"
        )
    inputs, rows = _inputs(document["inputs"], tail, length is not None, manifest, limits)
    return InferRequest(request_id, inputs, outputs, parameters, rows)


# --- the common request, decoded without the checks' own passes ----------------------------

# A float tensor of at most this many elements is proved finite before numpy converts it (its
# values' max and min within the dtype's range, in C over the list); a bigger one is converted
# with overflow ignored and checked with numpy, where the fixed cost of numpy's calls is small.
_SMALL_TENSOR = 512
_INPUT_REQUIRED = frozenset({"name", "shape", "datatype", "data"})
_SCALARS = (bool, int, float, str)
# The requested outputs when none are named, per manifest and binary_data_output: (manifest,
# outputs) by id(manifest), the manifest kept so that its id is not reused while cached.
_DEFAULT_OUTPUTS: dict[tuple[int, bool], tuple[Manifest, tuple[RequestedOutput, ...]]] = {}
_DEFAULT_OUTPUTS_KEPT = 256


def _decode_common(body: bytes, headers: Mapping[str, str], manifest: Manifest,
                   limits: RequestLimits,
                   choose: Callable[[Mapping[str, Any]], Manifest] | None
                   ) -> InferRequest | None:
    """decode_request's answer for the common request, or None (decline) whenever it cannot
    prove cheaply that decode_request_checked would accept the request: it then decodes it,
    and says what is wrong. Never raises.

    Accepted: a JSON body (no binary tensor header) that orjson parses to an object with
    `inputs` (and any of `id`, `parameters`, `outputs`), each input a numeric, BOOL or BYTES
    tensor with `data` flat or nested exactly like its `shape`; parameters of bool, number
    and string values. What the checked path proves with its own passes is proved here on the
    way:
    - parse_json's repeated keys and depth: the text's colons are counted (C) and must be the
      parsed objects' keys plus the colons inside the parsed strings, which holds exactly when
      no key was repeated (orjson keeps the last of two) given that no escaped colon
      (\\u003a) is in the text and no object hides in a tensor's data (its elements' types
      are checked); the depth follows from the structure accepted: 3 + the data's rank;
    - elements: one C pass over their types, as in json_tensor; nesting, by each level's
      lengths; range, by the values' max and min for a small float tensor (no overflow can
      happen in numpy's conversion then), else numpy's overflow to inf found by isfinite;
      numpy itself refuses an integer out of its datatype's range (OverflowError); a BYTES
      element's size in UTF-8, each (orjson refuses a lone surrogate escape, the one str
      that would not encode).
    tests/unit/test_codec_fast.py checks it against decode_request_checked on random valid
    and broken requests.
    """
    try:
        return _common(body, headers, manifest, limits, choose)
    except Exception:  # anything unforeseen: the checked path decides, and says why
        return None


def _common(body: bytes, headers: Mapping[str, str], manifest: Manifest, limits: RequestLimits,
            choose: Callable[[Mapping[str, Any]], Manifest] | None) -> InferRequest | None:
    if type(body) is not bytes or len(body) > limits.max_bytes or b"\\u003" in body:
        return None
    if headers and _header(headers, HEADER_LENGTH) is not None:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or not document.keys() <= _REQUEST_FIELDS:
        return None
    items = document.get("inputs")
    if type(items) is not list or not items:
        return None
    keys = len(document)
    colons = 0  # inside the parsed strings
    request_id = document.get("id")
    if request_id is not None:
        if type(request_id) is not str:
            return None
        colons += request_id.count(":")
    parameters = document.get("parameters")
    if parameters is None:
        parameters = {}
    else:
        counted = _plain_parameters(parameters)
        if counted is None:
            return None
        keys += counted[0]
        colons += counted[1]
    if choose is not None:
        manifest = choose(parameters)
    binary_default = parameters.get("binary_data_output", False)
    if type(binary_default) is not bool:
        return None
    named = document.get("outputs")
    if named is None or named == []:
        outputs = _default_outputs(manifest, binary_default)
    else:
        counted = _named_outputs(named)
        if counted is None:
            return None
        keys += counted[0]
        colons += counted[1]
        outputs = _outputs(named, manifest, binary_default)  # raises for what is wrong
    if not limits.binary and any(output.binary for output in outputs):
        return None
    arrays: dict[str, np.ndarray] = {}
    rows = -1
    for item in items:
        if type(item) is not dict or not _INPUT_REQUIRED <= item.keys() <= _INPUT_FIELDS:
            return None
        keys += len(item)
        name = item["name"]
        for spec in manifest.inputs:  # (Manifest.input, without its generator)
            if spec.name == name:
                break
        else:
            return None
        if spec.name in arrays or item["datatype"] != spec.datatype:
            return None
        colons += spec.name.count(":")
        if "parameters" in item:
            counted = _plain_parameters(item["parameters"])
            if counted is None or "binary_data_size" in item["parameters"]:
                return None
            keys += counted[0]
            colons += counted[1]
        common = _common_tensor(spec, item["shape"], item["data"], limits)
        if common is None or (rows != -1 and common[0].shape[0] != rows):
            return None
        array = common[0]
        colons += common[1]
        rows = array.shape[0]
        arrays[spec.name] = array
    if len(arrays) != len(manifest.inputs) or body.count(b":") != keys + colons:
        return None
    return InferRequest(request_id, arrays, outputs, parameters, rows)


def _plain_parameters(value: Any) -> tuple[int, int] | None:
    """A `parameters` object the checked path accepts: (its keys, the colons in its keys and
    string values); None when it is not an object of bool, number and string values."""
    if type(value) is not dict:
        return None
    colons = 0
    for key, item in value.items():
        if not isinstance(item, _SCALARS):
            return None
        colons += key.count(":")
        if type(item) is str:
            colons += item.count(":")
    return len(value), colons


def _named_outputs(items: Any) -> tuple[int, int] | None:
    """`outputs` objects of a name (and plain parameters): (their keys, the colons in their
    strings); None for anything else (the checked path says what)."""
    if type(items) is not list:
        return None
    keys = colons = 0
    for item in items:
        if type(item) is not dict or type(item.get("name")) is not str:
            return None
        keys += len(item)
        colons += item["name"].count(":")
        if "parameters" in item:
            counted = _plain_parameters(item["parameters"])
            if counted is None:
                return None
            keys += counted[0]
            colons += counted[1]
    return keys, colons


def _default_outputs(manifest: Manifest, binary: bool) -> tuple[RequestedOutput, ...]:
    """Every output of the manifest, made once per manifest (what _outputs gives for none)."""
    cached = _DEFAULT_OUTPUTS.get((id(manifest), binary))
    if cached is not None and cached[0] is manifest:
        return cached[1]
    outputs = _outputs(None, manifest, binary)
    if len(_DEFAULT_OUTPUTS) >= _DEFAULT_OUTPUTS_KEPT:
        _DEFAULT_OUTPUTS.clear()
    _DEFAULT_OUTPUTS[id(manifest), binary] = (manifest, outputs)
    return outputs


def _common_tensor(spec: TensorSpec, dims: Any, data: Any,
                   limits: RequestLimits) -> tuple[np.ndarray, int] | None:
    """The array of one input's JSON `data` when it surely fits (see _decode_common), and the
    colons inside its strings (BYTES elements; 0 for numbers); None when the checked path
    must look."""
    if (type(dims) is not list or not dims or len(dims) != len(spec.shape)
            or 3 + len(dims) > MAX_JSON_DEPTH or type(data) is not list or not data):
        return None
    for dim, declared in zip(dims, spec.shape, strict=True):
        if type(dim) is not int or not (dim > 0 if declared == -1 else dim == declared):
            return None
    count = math.prod(dims)
    if dims[0] > limits.max_rows or count > limits.max_tensor_elements:
        return None
    row = BY_NAME[spec.datatype]
    flat: list[Any] = data
    if type(data[0]) is list:  # nested: each level's lengths are the shape's
        if len(data) != dims[0]:
            return None
        for size in dims[1:]:
            # lists only: a str has a length too, and would be flattened into its characters
            if set(map(type, flat)) != {list} or set(map(len, flat)) != {size}:
                return None
            flat = list(chain.from_iterable(flat))
    if len(flat) != count or not set(map(type, flat)) <= row.json_types:
        return None
    if row.kind == "string":
        return _common_strings(flat, dims)
    if row.kind != "float":
        try:
            return np.array(flat, dtype=row.dtype).reshape(dims), 0
        except OverflowError:  # an integer out of the datatype's range
            return None
    if count <= _SMALL_TENSOR:
        largest = _LARGEST[spec.datatype]
        if max(flat) > largest or min(flat) < -largest:
            return None
        return np.array(flat, dtype=row.dtype).reshape(dims), 0
    with np.errstate(over="ignore"):  # np.fromiter: the same values as np.array, 1.3-1.4x
        array = np.fromiter(flat, dtype=row.dtype, count=count)  # faster on a long list
    if not np.isfinite(array).all():
        return None
    return array.reshape(dims), 0


def _common_strings(flat: list[str], dims: list[int]) -> tuple[np.ndarray, int] | None:
    """BYTES elements (all str, as many as the shape holds) as _strings makes them: an object
    array, each element within MAX_BYTES_ELEMENT bytes of UTF-8; and the colons inside them.
    orjson refuses a lone surrogate escape, so every parsed str encodes (checked anyway)."""
    for value in flat:
        if len(value) > MAX_BYTES_ELEMENT or (
                not value.isascii() and len(value.encode("utf-8")) > MAX_BYTES_ELEMENT):
            return None
    array = np.empty(len(flat), dtype=object)  # never numpy's guess at a nested list's shape
    array[:] = flat
    return array.reshape(dims), "".join(flat).count(":")


# The largest finite value of each float datatype, as a Python float.
_LARGEST = {row.name: float(np.finfo(row.dtype).max) for row in ROWS if row.kind == "float"}


def _raw_request(body: bytes, manifest: Manifest, limits: RequestLimits,
                 choose: Callable[[Mapping[str, Any]], Manifest] | None) -> InferRequest:
    """A raw binary request (Inference-Header-Content-Length 0, model_api.binary): the body
    is the model's one input, its shape deduced from its size; every output comes back as
    binary tensor data, as Triton answers it. 400 where the model or the path cannot take one."""
    if not limits.binary:
        raise BadRequest(
            f"a {limits.unit} carries no binary tensor data, so no raw binary request "
            f"({HEADER_LENGTH} 0): send a JSON request (or upload a .npy input)"
        )
    if len(manifest.inputs) != 1:
        raise BadRequest(
            f"a raw binary request ({HEADER_LENGTH} 0: the body is one input's bytes) needs a "
            f"model with one input; model '{manifest.name}' takes {_signature(manifest.inputs)}: "
            "send a JSON header"
        )
    if choose is not None:
        manifest = choose({})
    spec = manifest.inputs[0]
    shape = _shape(spec, list(raw_shape(spec.name, spec.datatype, spec.shape, len(body))),
                   limits)
    array = raw_tensor(spec.name, spec.datatype, shape, body)
    outputs = tuple(RequestedOutput(output.name, True) for output in manifest.outputs)
    return InferRequest(None, {spec.name: array}, outputs, {}, array.shape[0])


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw` (RFC 8259): strict UTF-8, no NaN/Infinity, unique keys,
    nesting at most MAX_JSON_DEPTH deep. Raises BadRequest saying what is wrong.

    orjson (already in the runtime layer for data capture) parses a valid document 3-4x
    faster than the standard library's scanner, which matters for the numbers of a tensor's
    `data`; it keeps the last of two equal keys, so the keys are counted on a skeleton of the
    text (strings dropped), which also gives the depth before any parser recurses. Whatever
    orjson refuses, or a document with a repeated key, is parsed again by the standard
    library with the checks below, whose messages name what to fix.
    """
    skeleton = _skeleton(raw)  # once: for the depth, then for the keys
    objects = skeleton.count(b"{")
    # A text cannot nest deeper than it has brackets, so most requests skip the depth's sum.
    if objects + skeleton.count(b"[") > MAX_JSON_DEPTH and (
            depth := _depth(skeleton)) > MAX_JSON_DEPTH:
        raise BadRequest(
            f"the request JSON nests {depth} levels deep; the limit is {MAX_JSON_DEPTH}"
        )
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parse_json_strictly(raw)
    if _objects_and_keys(document) != (objects, skeleton.count(b":")):
        return parse_json_strictly(raw)  # a repeated key (named by the strict parse), or
    return document                       # an object inside a list of numbers: rare, exact


def parse_json_strictly(raw: bytes) -> Any:
    """The standard library's parse of `raw`, with a BadRequest for each thing it refuses: what
    parse_json falls back to (and what bench.parse compares it with)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"the request JSON is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON, or "
            f"binary tensors after it with the {HEADER_LENGTH} header"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        if "integer string conversion" in str(exc):  # Python's own advice is not the client's
            raise BadRequest(
                "the request JSON has an integer literal of more than "
                f"{sys.get_int_max_str_digits()} digits; no datatype holds it"
            ) from None
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def _objects_and_keys(document: Any) -> tuple[int, int]:
    """How many objects a parsed document holds, and their keys, all levels together: the
    objects reached through objects and lists that start with an object (a request's
    `inputs`, `outputs`). Lists of numbers or of lists (a tensor's data) are not walked, so
    an object hidden in one is not counted, and the counts differ from the text's.
    """
    objects = keys = 0
    pending = [document]
    while pending:
        value = pending.pop()
        if type(value) is dict:
            objects += 1
            keys += len(value)
            pending.extend(value.values())
        elif type(value) is list and value and type(value[0]) is dict:
            pending.extend(value)
    return objects, keys


# The skeleton keeps only brackets, colons, quotes, backslashes and the letters an escape can
# start with, then drops whole strings: what is left of a valid text are its brackets and the
# colons after its keys. All of it runs in C (bytes.translate, re).
_JSON_KEEP = b'[]{}:"\\/bfnrtu'
_DROP_ALL_BUT_KEEP = bytes(c for c in range(256) if c not in _JSON_KEEP)
_DROP_ALL_BUT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
# A string, or an unterminated one up to the end: possessive, and always matching from a quote,
# so the scan stays linear whatever the text (a backtracking search would be quadratic).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def _skeleton(raw: bytes) -> bytes:
    return _STRING.sub(b"", raw.translate(None, _DROP_ALL_BUT_KEEP))


def _depth(skeleton: bytes) -> int:
    steps = skeleton.translate(_STEPS, _DROP_ALL_BUT_BRACKETS)
    if not steps:
        return 0
    return int(np.frombuffer(steps, dtype=np.int8).cumsum().max())


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, without parsing it.

    Python's JSON parser recurses once per level, so a hostile body is measured before it
    is parsed; exact for valid JSON (brackets inside strings are not counted).
    """
    return _depth(_skeleton(raw))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(
                    f"the request JSON has the key {_clip(repr(key))} twice in one object"
                )
            seen.add(key)
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, its name matched case-insensitively (API Gateway keeps the client's)."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def _check_fields(where: str, item: Mapping[str, Any], required: set[str],
                  allowed: frozenset[str]) -> None:
    missing = sorted(required - item.keys())
    if missing:
        raise BadRequest(f"{where} is missing {_quoted(missing)}")
    unknown = sorted(item.keys() - allowed)
    if unknown:
        raise BadRequest(
            f"{where} has unknown field(s) {_quoted(unknown)}; allowed: {_quoted(sorted(allowed))}"
        )


def _parameters(value: Any, where: str) -> dict[str, Any]:
    """A `parameters` object; each value must be a bool, a number or a string, the only kinds
    the protocol's $parameters allow (Triton refuses the others too): 400 otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object, got {_describe(value)}")
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise BadRequest(
                f"{where}: parameter {_clip(repr(key))} is {_describe(item)}; a parameter's "
                "value must be a bool, a number or a string"
            )
    return value


def _flag(parameters: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(
            f"{where}: parameter '{key}' must be true or false, got {_describe(value)}"
        )
    return value


def _outputs(items: Any, manifest: Manifest, binary_default: bool) -> tuple[RequestedOutput, ...]:
    """The outputs asked for, in order; all of the manifest's when none (or []) are named."""
    if items is None or items == []:
        return tuple(RequestedOutput(spec.name, binary_default) for spec in manifest.outputs)
    if not isinstance(items, list):
        raise BadRequest(
            f"'outputs' must be a list of {{\"name\": ...}} objects, got {_describe(items)}"
        )
    requested: dict[str, RequestedOutput] = {}
    for index, item in enumerate(items):
        where = f"outputs[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object with a 'name', got {_describe(item)}")
        _check_fields(where, item, {"name"}, _OUTPUT_FIELDS)
        name = item["name"]
        if not isinstance(name, str):
            raise BadRequest(f"{where}.name must be a string, got {_describe(name)}")
        if manifest.output(name) is None:
            raise NotFound(
                f"unknown output {_clip(repr(name))}; model '{manifest.name}' returns "
                f"{_quoted(spec.name for spec in manifest.outputs)}"
            )
        if name in requested:
            raise BadRequest(f"output {name!r} is asked for twice")
        parameters = _parameters(item.get("parameters"), f"output {name!r}")
        if "classification" in parameters:
            raise BadRequest(
                f"output {name!r}: the classification extension is not supported; ask for the "
                "output itself (the model metadata's 'parameters.labels' name the classes)"
            )
        binary = _flag(parameters, "binary_data", f"output {name!r}", binary_default)
        requested[name] = RequestedOutput(name, binary)
    return tuple(requested.values())


def _inputs(items: Any, tail: bytes, binary_header: bool, manifest: Manifest,
            limits: RequestLimits) -> tuple[dict[str, np.ndarray], int]:
    """Every input of the manifest as an array of its dtype, and the shared batch size."""
    if not isinstance(items, list):
        raise BadRequest(f"'inputs' must be a list of tensors, got {_describe(items)}")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, item in enumerate(items):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(
                f"{where} must be an object with name, shape, datatype and data, "
                f"got {_describe(item)}"
            )
        _check_fields(where, item, {"name", "shape", "datatype"}, _INPUT_FIELDS)
        spec = _input_spec(where, item["name"], manifest)
        if spec.name in arrays:
            raise BadRequest(f"input {spec.name!r} appears twice in 'inputs'")
        if item["datatype"] != spec.datatype:
            raise BadRequest(
                f"input {spec.name!r} has datatype {_datatype(item['datatype'])}; the model "
                f"takes {spec.datatype}"
            )
        shape = _shape(spec, item["shape"], limits)
        size = _parameters(item.get("parameters"), f"input {spec.name!r}").get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise BadRequest(
                    f"input {spec.name!r} has neither 'data' nor parameters.binary_data_size"
                )
            arrays[spec.name] = json_tensor(spec, shape, item["data"])
            continue
        if "data" in item:
            raise BadRequest(
                f"input {spec.name!r} has both 'data' and parameters.binary_data_size; send one"
            )
        if not limits.binary:
            raise BadRequest(
                f"input {spec.name!r} has binary_data_size, but a {limits.unit} carries no "
                "binary tensor data: send its values as 'data' (or upload a .npy input)"
            )
        if not binary_header:
            raise BadRequest(
                f"input {spec.name!r} has binary_data_size but the request has no "
                f"{HEADER_LENGTH} header to say where its JSON ends"
            )
        if type(size) is not int or size < 0:
            raise BadRequest(
                f"input {spec.name!r}: binary_data_size must be a byte count, got {_describe(size)}"
            )
        if offset + size > len(tail):
            raise BadRequest(
                f"input {spec.name!r} has binary_data_size {size} but only "
                f"{len(tail) - offset} bytes of binary data are left in the body"
            )
        arrays[spec.name] = decode_tensor(spec.name, spec.datatype, shape,
                                          tail[offset:offset + size])
        offset += size
    missing = [spec.name for spec in manifest.inputs if spec.name not in arrays]
    if missing:
        raise BadRequest(
            f"missing input(s) {_quoted(missing)}; model '{manifest.name}' takes "
            f"{_signature(manifest.inputs)}"
        )
    if offset != len(tail):
        raise BadRequest(
            f"{len(tail) - offset} bytes after the JSON header belong to no input; "
            "each binary input's parameters.binary_data_size must count its bytes"
        )
    batch = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(batch.values())) > 1:
        raise BadRequest(f"inputs must have the same batch (first) dimension, got {batch}")
    return arrays, next(iter(batch.values()))


def _input_spec(where: str, name: Any, manifest: Manifest) -> TensorSpec:
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string, got {_describe(name)}")
    spec = manifest.input(name)
    if spec is None:
        raise BadRequest(
            f"unknown input {_clip(repr(name))}; model '{manifest.name}' takes "
            f"{_signature(manifest.inputs)}"
        )
    return spec


def _shape(spec: TensorSpec, value: Any, limits: RequestLimits) -> tuple[int, ...]:
    """The request's shape once it fits the manifest's and the limits."""
    if isinstance(value, list):
        value = [int(dim) if _beyond_64_bits(dim) else dim for dim in value]
    if not isinstance(value, list) or not all(type(dim) is int for dim in value):
        raise BadRequest(
            f"input {spec.name!r}: shape must be a list of integers, got {_clip(json.dumps(value))}"
        )
    fits = len(value) == len(spec.shape) and all(
        dim > 0 if declared == -1 else dim == declared
        for dim, declared in zip(value, spec.shape, strict=True)
    )
    if not fits and len(value) == len(spec.shape) and any(dim <= 0 for dim in value):
        raise BadRequest(
            f"input {spec.name!r} has shape {_clip(str(value))}: each dimension counts "
            f"elements, at least 1 (the model takes {list(spec.shape)}; -1: any positive size)"
        )
    if not fits:
        raise BadRequest(
            f"input {spec.name!r} has shape {_clip(str(value))}; the model takes "
            f"{list(spec.shape)} (-1: any positive size)"
        )
    if value[0] > limits.max_rows:
        raise TooLarge(
            f"input {spec.name!r} has {value[0]} rows; the limit is {limits.max_rows} rows per "
            f"{limits.unit} ({limits.bigger})"
        )
    count = math.prod(value)
    if count > limits.max_tensor_elements:
        raise TooLarge(
            f"input {spec.name!r} has {count} elements; the limit is "
            f"{limits.max_tensor_elements} elements per tensor (send fewer rows)"
        )
    return tuple(value)


def json_tensor(spec: TensorSpec, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """The array of an input's JSON `data` (flat, or nested exactly like `shape`)."""
    if not isinstance(data, list):
        raise BadRequest(
            f"input {spec.name!r}: data must be a JSON array, flat or nested like the shape, "
            f"got {_describe(data)}"
        )
    nested = bool(data) and isinstance(data[0], list)
    if spec.datatype == BYTES:
        return _strings(spec, shape, data, nested)
    # Nested data is flattened first (in C), its nesting checked level by level against the
    # shape: numpy converts a flat list 1.2-1.7x faster than nested lists, whose shape it
    # must discover (bench/warm.py, phases_ms "validate").
    # The errors come in the order numpy's conversion of the nested lists gave them: a wrong
    # element type; ragged lists; a value out of range; lists even but not the shape's.
    flat: list[Any] = data
    ragged = other_shape = False
    if nested:
        other_shape = len(data) != shape[0]
        levels: Iterable[Any] = data
        try:
            for depth in range(1, len(shape)):
                level = list(levels)
                lengths = set(map(len, level))
                ragged = ragged or len(lengths) > 1
                other_shape = other_shape or lengths != {shape[depth]}
                levels = chain.from_iterable(level)
            flat = list(levels)
        except TypeError:  # a number where a nested array belongs
            raise _nesting_error(spec, shape) from None
    # One pass in C over the elements' types before numpy sees them: numpy would parse
    # "1.5" as a number, take true as 1, and size a str array by its longest element.
    types = set(map(type, flat))
    if list in types:
        raise _nesting_error(spec, shape)
    if not types <= BY_NAME[spec.datatype].json_types:
        raise _element_error(spec, data)
    if ragged:
        raise _nesting_error(spec, shape)
    try:
        with np.errstate(over="ignore"):  # a float beyond the dtype's range becomes inf: below
            array = np.array(flat, dtype=numpy_dtype(spec.datatype))
    except OverflowError:  # an integer out of the datatype's range
        raise _element_error(spec, data) from None
    if is_float(spec.datatype) and not np.isfinite(array).all():
        raise _element_error(spec, data)
    if other_shape:
        raise _nesting_error(spec, shape)
    if nested:
        return array.reshape(shape)
    return _shaped(spec, array, shape, nested)


def _strings(spec: TensorSpec, shape: tuple[int, ...], data: list[Any],
             nested: bool) -> np.ndarray:
    """BYTES data: an object array of str, each element within MAX_BYTES_ELEMENT bytes."""
    try:
        array = np.array(data, dtype=object)
    except ValueError:
        raise _nesting_error(spec, shape) from None
    array = _shaped(spec, array, shape, nested)
    for index, value in enumerate(array.flat):
        if type(value) is not str:
            raise BadRequest(
                f"input {spec.name!r} element {index} is {_describe(value)}; BYTES elements "
                "are strings"
            )
        if value.isascii():
            size = len(value)
        else:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise BadRequest(
                    f"input {spec.name!r} element {index} is not valid Unicode (a lone "
                    "surrogate escape)"
                ) from None
        if size > MAX_BYTES_ELEMENT:
            raise TooLarge(
                f"input {spec.name!r} element {index} is {size} bytes; the limit is "
                f"{MAX_BYTES_ELEMENT} bytes per BYTES element"
            )
    return array


def _shaped(spec: TensorSpec, array: np.ndarray, shape: tuple[int, ...],
            nested: bool) -> np.ndarray:
    if not nested:
        count = math.prod(shape)
        if array.size != count or array.ndim != 1:
            raise BadRequest(
                f"input {spec.name!r} has {array.size} data elements but shape {list(shape)} "
                f"holds {count}"
            )
        return array.reshape(shape)
    if array.shape != shape:
        raise _nesting_error(spec, shape)
    return array


def _nesting_error(spec: TensorSpec, shape: tuple[int, ...]) -> BadRequest:
    return BadRequest(
        f"input {spec.name!r}: data must be nested exactly like shape {list(shape)}, "
        "or be one flat array in row-major order"
    )


def _element_error(spec: TensorSpec, data: list[Any]) -> BadRequest:
    """The first element of `data` that does not fit the datatype, named by its flat index."""
    for index, value in enumerate(_walk(data)):
        problem = _element_problem(value, spec.datatype)
        if problem:
            return BadRequest(f"input {spec.name!r} element {index} {problem}")
    return BadRequest(f"input {spec.name!r}: data does not fit {spec.datatype}")


def _walk(data: list[Any]) -> Iterator[Any]:
    """The elements of nested lists in row-major order."""
    for item in data:
        if isinstance(item, list):
            yield from _walk(item)
        else:
            yield item


def _beyond_64_bits(value: Any) -> bool:
    """Whether `value` is a whole float beyond any 64-bit integer: orjson reads an integer
    literal of more than 64 bits as a float, so a shape or an integer element that big is
    told as too large, not as "not an integer" (a float literal that big is out of range too).
    """
    return type(value) is float and math.isfinite(value) and value.is_integer() and not (
        -(2**63) <= value < 2**64)


def _element_problem(value: Any, datatype: str) -> str | None:
    """What is wrong with one numeric or BOOL element, or None."""
    kind = BY_NAME[datatype].kind
    if kind == "bool":
        if type(value) is bool:
            return None
        return f"is {_describe(value)}; {datatype} takes true or false"
    if kind == "integer":
        info = np.iinfo(numpy_dtype(datatype))
        if type(value) is not int and not _beyond_64_bits(value):
            return f"is {_describe(value)}; {datatype} takes integers"
        if not info.min <= value <= info.max:
            return f"is {_describe(value)}, outside {datatype}'s range {info.min}..{info.max}"
        return None
    if type(value) not in (int, float):
        return f"is {_describe(value)}; {datatype} takes numbers"
    largest = float(np.finfo(numpy_dtype(datatype)).max)
    try:
        fits = abs(float(value)) <= largest
    except OverflowError:  # an integer beyond any float
        fits = False
    if fits:
        return None
    return f"is {_describe(value)}; {datatype} takes finite numbers within ±{largest:.7g}"


# --- responses ------------------------------------------------------------------------------


def compact_json(document: Any) -> bytes:
    """`document` as compact UTF-8 JSON: orjson (20-25x the standard library's speed on a
    tensor's floats, the same values), else the standard library for what orjson refuses (a
    lone surrogate: a client's `id` sent as an escape). ValueError for NaN or infinity."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_response(manifest: Manifest, request: InferRequest,
                    results: Mapping[str, np.ndarray],
                    parameters: Mapping[str, Any] | None = None,
                    limits: RequestLimits = API_REQUEST) -> InferResult:
    """The response body: compact JSON, or a JSON header then binary tensors when any output
    asks for it (only where `limits.binary`: a batch record's answer is one JSON line);
    `parameters` become the answer's `parameters` object. 413 when the body would exceed
    `limits.max_answer_bytes`; 400 for NaN or infinite values in a JSON output."""
    document = _response_header(manifest, request, parameters)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in request.outputs:
        array = results[output.name]
        entry = _output_metadata(manifest, output.name, array)
        if output.binary and limits.binary:
            blob = encode_tensor(array, entry["datatype"])
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(manifest, output.name, array, limits.nonfinite)
        outputs.append(entry)
    document["outputs"] = outputs
    header = compact_json(document)
    body = b"".join([header, *blobs]) if blobs else header
    if limits.max_answer_bytes is not None and len(body) > limits.max_answer_bytes:
        raise TooLarge(
            f"the response would be {len(body)} bytes; the limit is {limits.max_answer_bytes} "
            "bytes (send fewer rows, ask for fewer outputs, or ask for binary_data outputs)"
        )
    if not blobs:
        return InferResult(body, {"Content-Type": JSON_TYPE}, request.rows)
    headers = {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}
    return InferResult(body, headers, request.rows)


def _response_header(manifest: Manifest, request: InferRequest,
                     parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    # The protocol's answer always has an `id` (KServe's response model requires one): the
    # request's, else the one its caller gave it (Pipeline.decode), else "".
    document: dict[str, Any] = {"model_name": manifest.name, "model_version": manifest.version,
                                "id": request.id if request.id is not None else ""}
    if parameters:
        document["parameters"] = dict(parameters)
    return document


def _output_metadata(manifest: Manifest, name: str, array: np.ndarray) -> dict[str, Any]:
    for spec in manifest.outputs:
        if spec.name == name:
            return {"name": name, "datatype": spec.datatype, "shape": list(array.shape)}
    raise KeyError(name)  # never: the outputs asked for were checked against the manifest


def _json_data(manifest: Manifest, name: str, array: np.ndarray, nonfinite: str) -> list[Any]:
    """Flat row-major data; float32 values become the doubles they are, which round-trip.

    Finite inputs can still overflow a model (3e38 through a linear layer): that is the
    request's doing, so a 400, not a 5xx that would count against the deployment; `nonfinite`
    says how to receive such values on the caller's path.
    """
    values: list[Any] = array.ravel().tolist()
    # A sum of finite values that stays finite proves them all finite (an inf or NaN never
    # leaves a sum), in C over the list that is sent anyway; numpy's check where it does not
    # (huge FP64 values) or where the list is long.
    if array.dtype.kind == "f" and not (
            len(values) <= _SMALL_TENSOR and math.isfinite(sum(values))) and not np.isfinite(
            array).all():
        raise BadRequest(
            f"model '{manifest.name}' gives NaN or infinite values in output {name!r} for these "
            f"inputs (are they in the range the model was trained on?); JSON cannot carry them: "
            f"{nonfinite}"
        )
    return values


# --- messages -------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """A short, JSON-flavoured description of a value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "the string " + _clip(json.dumps(value[:41]))
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _clip(repr(value))


def _datatype(value: Any) -> str:
    """A request's `datatype` for an error message: a string as its JSON ("INT64"), anything
    else described (_describe)."""
    return _clip(json.dumps(value[:41])) if isinstance(value, str) else _describe(value)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _quoted(names: Iterable[str], most: int = 10) -> str:
    """'a', 'b', ... for a message: names clipped, and no more than `most` of them."""
    listed = list(names)
    shown = ", ".join(f"'{_clip(name)}'" for name in listed[:most])
    return shown + (f" and {len(listed) - most} more" if len(listed) > most else "")


def _signature(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"'{s.name}' ({s.datatype} {list(s.shape)})" for s in specs)
