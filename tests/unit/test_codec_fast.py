"""codec's fast path (`_decode_common`) against the checked path (`decode_request_checked`).

decode_request answers a request through the fast path only when it proved the request valid,
and otherwise through the checked path, which says what is wrong. So the one property that
matters: whenever the fast path answers, the checked path accepts the same request and decodes
the same arrays (dtype, shape, values), id, outputs, parameters and rows. Thousands of random
requests, valid and broken (in their fields, types, values, ranges, nesting, shapes, limits,
repeated keys, escapes), are decoded both ways; and the fast path must answer the plain valid
ones, or it would be a path never taken. A few seconds.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from model_api import codec, limits
from model_api.errors import BadRequest, ModelAPIError
from model_api.manifest import Manifest
from msgspec.structs import replace

from tests.unit.tiny_models import manifest_of

ROUNDS = 3000  # random requests per run (deterministic: seeded)

MANIFESTS = [
    manifest_of(("x", "FP32", (-1, 4)),
                outputs=[("label", "INT64", (-1,)), ("scores", "FP32", (-1, 2))]),
    manifest_of(("image", "FP32", (-1, 2, 3))),
    manifest_of(("h", "FP16", (-1, 3)), ("d", "FP64", (-1, 2))),
    manifest_of(("i", "INT64", (-1, 3)), ("u", "UINT8", (-1, 2)), ("b", "BOOL", (-1, 2))),
    manifest_of(("s", "INT8", (-1,)), ("w", "UINT64", (-1, 2))),
    manifest_of(("t", "BYTES", (-1,))),
    manifest_of(("p", "BYTES", (-1, 2)), ("n", "INT64", (-1, 1))),  # a text and a number
    manifest_of(("g", "BYTES", (-1, 2, 2))),  # texts nested two levels deep
    manifest_of(("big", "FP32", (-1, 700))),  # past _SMALL_TENSOR at one row
    manifest_of(("deep", "FP32", (-1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1))),  # rank 30: too deep nested
]
SMALL = replace(limits.BATCH_RECORD, max_rows=3, max_tensor_elements=40, max_bytes=4000)
LIMITS = [limits.API_REQUEST, limits.BATCH_RECORD, SMALL]

# Values that break a datatype somewhere (type, range, finiteness, nesting).
ODD_VALUES: list[Any] = [True, False, None, "1.5", "", {}, [], [1], {"a": 1}, 1e39, -1e39,
                         65504.0, 65520.0, 70000, 3.4028235e38, 3.5e38, 1.7976931348623157e308,
                         2**63, 2**64, -(2**63) - 1, 2**64 - 1, 10**30, -1, 256, 255, -129,
                         0.5, 1.0, 0, 1, -0.0, 5e-324, 1e-45,
                         "x" * 65_537, "ü" * 32_769, "ü" * 32_768, "x" * 65_536]


def value(rng: random.Random, datatype: str, odd: float) -> Any:
    """A value that fits `datatype`, or at the rate `odd` one of ODD_VALUES."""
    if odd and rng.random() < odd:
        return rng.choice(ODD_VALUES)
    if datatype == "BOOL":
        return rng.random() < 0.5
    if datatype == "BYTES":
        return rng.choice(["a", "b:c", "", "ü", "::", '"q": [1]', "{}", "\\:", "😀:"])
    if datatype.startswith("UINT"):
        return rng.randrange(0, 200)
    if datatype.startswith("INT"):
        return rng.randrange(-100, 100)
    if rng.random() < 0.2:
        return rng.randrange(-5, 5)
    return rng.choice([rng.uniform(-100, 100), rng.uniform(-1, 1) * 10.0 ** rng.randrange(-40, 40)])


def nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0]
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def tensor(rng: random.Random, spec: Any, rows: int, odd: float) -> dict[str, Any]:
    shape = [rows if dim == -1 else dim for dim in spec.shape]
    count = int(np.prod(shape))
    flat = [value(rng, spec.datatype, odd) for _ in range(count)]
    nested = rng.random() < 0.5 and len(shape) > 1
    item: dict[str, Any] = {"name": spec.name, "shape": shape, "datatype": spec.datatype,
                            "data": nest(flat, shape) if nested else flat}
    if odd and rng.random() < 0.1:
        item["parameters"] = rng.choice([{}, {"note": "a:b"}, {"binary_data_size": None},
                                         {"x": [1]}, {"binary_data_size": 4}])
    return item


def mutate_item(rng: random.Random, item: dict[str, Any]) -> None:
    """One structural break in an input."""
    kind = rng.choice([*range(12), 6, 6])
    if kind == 0:
        item["shape"] = [*item["shape"], 1]
    elif kind == 1:
        item["shape"] = [item["shape"][0] + 1, *item["shape"][1:]]
    elif kind == 2:
        item["shape"] = [float(item["shape"][0]), *item["shape"][1:]]
    elif kind == 3:
        item["datatype"] = rng.choice(["FP32", "FP64", "INT64", "BOOL", "BYTES", "fp32", 7])
    elif kind == 4:
        item["data"] = item["data"][:-1]
    elif kind == 5:
        item["data"] = [*item["data"], item["data"][0]]
    elif kind == 6:  # ragged: one row shorter, or an element moved to the row before
        data = item["data"]
        if len(data) > 1 and isinstance(data[0], list) and isinstance(data[1], list) \
                and rng.random() < 0.7:
            data[0].append(data[1].pop())
        elif data and isinstance(data[0], list):
            data[0] = data[0][:-1] or [[]]
    elif kind == 7:
        item["data"] = rng.choice([None, "x", {}, [], [[]], [[{}]], 3])
    elif kind == 8:
        item.pop(rng.choice(["name", "shape", "datatype", "data"]))
    elif kind == 9:
        item["extra"] = 1
    elif kind == 10:
        item["name"] = rng.choice(["nope", "", 3, None])
    else:
        item["shape"] = rng.choice([[], None, "1", [0, *item["shape"][1:]], [-1]])


def request(rng: random.Random, manifest: Manifest) -> tuple[bytes, bool]:
    """A request body for `manifest`, and whether it was left plain (valid, unmutated)."""
    rows = rng.choice([1, 1, 1, 2, 3, 4])
    odd = rng.choice([0.0, 0.0, 0.03, 0.2])
    items = [tensor(rng, spec, rows, odd) for spec in manifest.inputs]
    document: dict[str, Any] = {"inputs": items}
    if rng.random() < 0.5:
        document["id"] = rng.choice(["1", "line-7", "a:b", "", "\u00e9"])
    if rng.random() < 0.2:
        document["parameters"] = rng.choice([{}, {"explain": False}, {"explain": True},
                                             {"explain": "yes"}, {"binary_data_output": True},
                                             {"k": "v:w", "n": 1.5}, {"o": {"a": 1}}, None])
    if rng.random() < 0.15:
        document["outputs"] = rng.choice([[], None, [{"name": manifest.outputs[0].name}],
                                          [{"name": "nope"}], [{"name": manifest.outputs[0].name,
                                                                "parameters": {"binary_data":
                                                                               True}}],
                                          [{"name": manifest.outputs[0].name}] * 2, {}])
    plain = not odd
    if rng.random() < 0.3:
        mutate_item(rng, rng.choice(items))
        plain = False
    if rng.random() < 0.05:
        document[rng.choice(["extra", "Inputs"])] = 1
        plain = False
    if rng.random() < 0.05:
        rng.shuffle(items)
        items.append(dict(items[0]))  # an input twice
        plain = False
    text = json.dumps(document, separators=rng.choice([(",", ":"), (", ", ": ")]))
    edit = rng.random()
    if edit < 0.04:  # a repeated key, at the text's level
        text = text.replace('"inputs":', '"id": "dup", "inputs":', 1) if '"id"' in text else \
            text.replace('{"inputs":', '{"inputs": [], "inputs":', 1)
        plain = False
    elif edit < 0.06:  # a colon sent as an escape
        text = text.replace("a:b", "a\\u003ab")
    elif edit < 0.07:
        text = text[:-1]
        plain = False
    elif edit < 0.08:
        text = "[" + text + "]"
        plain = False
    return text.encode(), plain


def choose_for(manifest: Manifest, explained: Manifest) -> Callable[[Mapping[str, Any]],
                                                                     Manifest]:
    """What Pipeline.decode passes: the explanation's manifest when `explain` is true."""
    def choose(parameters: Mapping[str, Any]) -> Manifest:
        flag = parameters.get("explain", False)
        if not isinstance(flag, bool):
            raise BadRequest(f"parameter 'explain' must be true or false, got {flag!r:.40}")
        return explained if flag else manifest
    return choose


def checked(body: bytes, manifest: Manifest, limit: limits.RequestLimits,
            choose: Any) -> codec.InferRequest | tuple[type, str]:
    try:
        return codec.decode_request_checked(body, {}, manifest, limit, choose)
    except ModelAPIError as error:
        return type(error), error.message


def same(fast: codec.InferRequest, slow: codec.InferRequest) -> bool:
    if (fast.id, fast.outputs, fast.parameters, fast.rows) != (
            slow.id, slow.outputs, slow.parameters, slow.rows):
        return False
    if list(fast.inputs) != list(slow.inputs):
        return False
    return all(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
               and np.array_equal(np.signbit(a), np.signbit(b)) if a.dtype.kind == "f" else
               a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
               for a, b in zip(fast.inputs.values(), slow.inputs.values(), strict=True))


def test_the_fast_path_answers_only_what_the_checked_path_accepts_and_the_same() -> None:
    rng = random.Random(20261206)
    answered = plain_seen = plain_answered = refused = 0
    for _ in range(ROUNDS):
        manifest = rng.choice(MANIFESTS)
        explained = replace(manifest, outputs=(*manifest.outputs, *manifest_of(
            ("x", "FP32", (-1,)), outputs=[("attributions", "FP32", (-1, 2))]).outputs))
        choose = rng.choice([None, choose_for(manifest, explained)])
        limit = rng.choice(LIMITS)
        body, plain = request(rng, manifest)
        fast = codec._decode_common(body, {}, manifest, limit, choose)
        slow = checked(body, manifest, limit, choose)
        if fast is not None:
            answered += 1
            assert isinstance(slow, codec.InferRequest), (body[:300], slow)
            assert same(fast, slow), body[:300]
        else:
            refused += isinstance(slow, tuple)
        # decode_request itself: the same answer, or the same error and message
        try:
            whole: codec.InferRequest | tuple[type, str] = codec.decode_request(
                body, {}, manifest, limit, choose)
        except ModelAPIError as error:
            whole = type(error), error.message
        if isinstance(slow, tuple):
            assert whole == slow, body[:300]
        else:
            assert isinstance(whole, codec.InferRequest) and same(whole, slow), body[:300]
        if plain and isinstance(slow, codec.InferRequest) and limit is not SMALL and \
                b"\\u003" not in body and \
                "deep" not in manifest.inputs[0].name:
            plain_seen += 1
            plain_answered += fast is not None
    # Both outcomes are well represented, and the plain valid requests take the fast path
    # (those with an odd value drawn in: its range is for the checked path to judge).
    assert answered > ROUNDS // 5 and refused > ROUNDS // 5, (answered, refused)
    assert plain_answered >= 0.8 * plain_seen, (plain_answered, plain_seen)


def test_the_fast_path_declines_what_it_cannot_prove() -> None:
    manifest = MANIFESTS[0]
    x: dict[str, Any] = {"name": "x", "shape": [1, 4], "datatype": "FP32",
                         "data": [1, 2.5, -3, 4]}
    good = {"id": "1", "inputs": [x]}
    assert codec._decode_common(json.dumps(good).encode(), {}, manifest, limits.API_REQUEST,
                                None) is not None
    # an escaped colon: the colons are then not counted (valid: the checked path decodes it)
    escaped = (b'{"id": "a\\u003ab", "inputs": [{"name": "x", "shape": [1, 4], "datatype": '
               b'"FP32", "data": [1, 2, 3, 4]}]}')
    assert codec._decode_common(escaped, {}, manifest, limits.API_REQUEST, None) is None
    assert codec.decode_request(escaped, {}, manifest, limits.API_REQUEST).id == "a:b"
    declined = [
        # a repeated key: orjson would keep the last
        b'{"id": "1", "id": "2", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",'
        b' "data": [1, 2, 3, 4]}]}',
        # true in a float tensor; a value past FP32
        json.dumps({"inputs": [{**x, "data": [1, True, 3, 4]}]}).encode(),
        json.dumps({"inputs": [{**x, "data": [1, 3.5e38, 3, 4]}]}).encode(),
    ]
    for body in declined:
        assert codec._decode_common(body, {}, manifest, limits.API_REQUEST, None) is None
        try:
            codec.decode_request(body, {}, manifest, limits.API_REQUEST)
        except ModelAPIError:
            continue
        raise AssertionError(f"accepted {body!r}")
    binary = {"Inference-Header-Content-Length": str(len(json.dumps(good)))}
    assert codec._decode_common(json.dumps(good).encode(), binary, manifest,
                                limits.API_REQUEST, None) is None


def test_the_fast_path_takes_text_and_declines_an_element_past_its_limit() -> None:
    manifest = MANIFESTS[5]  # one BYTES input
    limit = limits.BATCH_RECORD

    def body(*texts: str) -> bytes:
        return json.dumps({"id": "a:b", "inputs": [{"name": "t", "shape": [len(texts)],
                                                    "datatype": "BYTES",
                                                    "data": list(texts)}]}).encode()
    at_limit = ["x" * limits.MAX_BYTES_ELEMENT, "ü" * (limits.MAX_BYTES_ELEMENT // 2),
                'a "quoted": colon', "😀"]
    fast = codec._decode_common(body(*at_limit), {}, manifest, limit, None)
    assert fast is not None and fast.inputs["t"].dtype == object
    assert fast.inputs["t"].tolist() == at_limit and fast.id == "a:b"
    for past in ["x" * (limits.MAX_BYTES_ELEMENT + 1), "ü" * (limits.MAX_BYTES_ELEMENT // 2 + 1)]:
        sent = body("fine", past)
        assert codec._decode_common(sent, {}, manifest, limit, None) is None
        try:
            codec.decode_request(sent, {}, manifest, limit)
        except ModelAPIError as error:
            assert "per BYTES element" in error.message
            continue
        raise AssertionError("accepted an element past MAX_BYTES_ELEMENT")


def test_a_text_is_never_taken_for_a_level_of_nesting() -> None:
    """A string has a length and can be iterated like a list: data one level shallower than
    the shape, its strings as long as the missing level, must not be split into characters."""
    manifest = manifest_of(("g", "BYTES", (-1, 2, 2)))
    for data in ([["ab", "cd"]], [["ab", ["c", "d"]]], [[["a", "b"], "cd"]]):
        body = json.dumps({"inputs": [{"name": "g", "shape": [1, 2, 2], "datatype": "BYTES",
                                       "data": data}]}).encode()
        assert codec._decode_common(body, {}, manifest, limits.API_REQUEST, None) is None, data
        with pytest.raises(BadRequest):
            codec.decode_request(body, {}, manifest, limits.API_REQUEST)
    good = json.dumps({"inputs": [{"name": "g", "shape": [1, 2, 2], "datatype": "BYTES",
                                   "data": [[["a", "b:"], ["c", "d"]]]}]}).encode()
    fast = codec._decode_common(good, {}, manifest, limits.API_REQUEST, None)
    assert fast is not None and fast.inputs["g"].tolist() == [[["a", "b:"], ["c", "d"]]]
