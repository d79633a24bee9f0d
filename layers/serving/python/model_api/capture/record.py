"""One captured record, built from an exchange of the pipeline (model_api.pipeline):

    {"capture": 1, "model": "text-topics", "version": "1", "time": "2026-12-01T10:00:00.123456Z",
     "request_id": "<128 random bits, hex>", "id": "<the request's own id, or null>", "path": "api",
     "rows": 1,   (a batch job's records: "path": "batch", then "job_id": "<its id>")
     "inputs": {"text": {"length": [29], "tokens": [6], "oov": [0.1667],
                         "hash": ["<hmac-sha256 hex>"]}},
     "outputs": {"label": ["sport"], "probabilities": [[0.02, 0.91, 0.04, 0.03]]}}

`inputs` are as the model saw them (decoded and checked), each through its rule
(model_api.capture.config): a BYTES input's default, `summary`, keeps per row its length in
characters, its token count (the model's own token pattern when the manifest names one, else
runs of word characters), the share of those tokens outside the model's vocabulary (`oov`,
when the manifest's `monitoring.vocabulary` lists it: read from the graph at export; the words
the model drops first, a vectorizer's stop words, when the export lists them as `ignored`,
count as neither; null for a text without a token looked up) and an HMAC-SHA256 of its UTF-8
bytes under the deployment's key, so equal texts can be counted without keeping them; never
the text. `outputs` are the model's
own outputs (not an explanation's). Never the API key, the headers or the body as sent.

`capture` (MARKER, first) is the record format's version and the mark by which a log line is
known for a record: the CloudWatch Logs subscription's filter pattern `{ $.capture = 1 }` on
Lambda, the local API's LINE_PREFIX test on a worker's output. Readers (model_api.capture.store.
read) leave it out of what they give back.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import orjson

from model_api.capture.config import BUCKET, DROP, HASH, KEEP, ROUND, SUMMARY, CaptureConfig, Rule
from model_api.manifest import Manifest
from model_api.tokens import compile_token_pattern

DEFAULT_TOKEN_PATTERN = re.compile(r"\w+")
# The record of a request over this many bytes of JSON is dropped (reason "too_large").
MAX_RECORD_BYTES = 1 << 20
MARKER, FORMAT = "capture", 1
# Every record's JSON line starts so (compact JSON, the marker first).
LINE_PREFIX = f'{{"{MARKER}":{FORMAT},'.encode()


def token_pattern(manifest: Manifest) -> re.Pattern[str]:
    """The model's own tokenizer pattern (the manifest's explanation.token_pattern, read from
    the graph at export; compiled by model_api.tokens), else runs of word characters."""
    explanation = manifest.extra.get("explanation")
    pattern = explanation.get("token_pattern") if isinstance(explanation, Mapping) else None
    try:
        return compile_token_pattern(pattern) if isinstance(pattern, str) else \
            DEFAULT_TOKEN_PATTERN
    except re.error:
        return DEFAULT_TOKEN_PATTERN


class Vocabulary(NamedTuple):
    """A text model's vocabulary: `words` it looks tokens up in, whether tokens are
    lower-cased first, and the words it drops before that (`ignored`: a vectorizer's stop
    words), which are neither in nor out of it."""

    words: frozenset[str]
    lowercase: bool
    ignored: frozenset[str] = frozenset()


_VOCABULARIES: dict[tuple[str, str, str], Vocabulary | None] = {}


def vocabulary(manifest: Manifest) -> Vocabulary | None:
    """The model's vocabulary from the manifest's `monitoring.vocabulary` ({"words",
    "lowercase", "ignored"}), read once per model file; None without one."""
    key = (manifest.name, manifest.version, manifest.sha256)
    if key not in _VOCABULARIES:
        section = manifest.extra.get("monitoring")
        found = section.get("vocabulary") if isinstance(section, Mapping) else None
        words = found.get("words") if isinstance(found, Mapping) else None
        ignored = found.get("ignored") if isinstance(found, Mapping) else None
        _VOCABULARIES[key] = (
            Vocabulary(frozenset(str(w) for w in words), bool(found.get("lowercase")),
                       frozenset(str(w) for w in ignored) if isinstance(ignored, list)
                       else frozenset())
            if isinstance(words, list) and isinstance(found, Mapping) else None)
    return _VOCABULARIES[key]


def oov_share(tokens: list[str], known: Vocabulary) -> float | None:
    """The share of `tokens` not in the vocabulary `known` (4 decimals), its ignored words
    (stop words) left out of both counts; None without a token it looks up."""
    looked_up = [token.lower() if known.lowercase else token for token in tokens]
    looked_up = [token for token in looked_up if token not in known.ignored]
    if not looked_up:
        return None
    missing = sum(token not in known.words for token in looked_up)
    return round(missing / len(looked_up), 4)


def _texts(array: np.ndarray) -> list[str]:
    return [value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            for value in array.reshape(-1).tolist()]


def _shaped(values: list[Any], shape: tuple[int, ...]) -> Any:
    """A flat list back in `shape` (nested lists), for the record."""
    return np.array(values, dtype=object).reshape(shape).tolist() if len(shape) > 1 else values


_KEYED: dict[bytes, Any] = {}  # key -> its HMAC state after the key (copied per text)


def _numbers(array: np.ndarray) -> Any:
    """A numeric array as the record holds it: the array itself, which orjson writes with
    OPT_SERIALIZE_NUMPY at its own precision (an FP32 17.99 stays 17.99, where tolist() would
    widen it to 17.989999771118164; NaN and infinities become null as for Python floats)."""
    return np.ascontiguousarray(array)


def keyed_hash(key: bytes, text: str) -> str:
    """HMAC-SHA256 of `text`'s UTF-8 bytes under `key`, lowercase hex."""
    keyed = _KEYED.get(key)
    if keyed is None:
        keyed = _KEYED[key] = hmac.new(key, digestmod=hashlib.sha256)
    digest = keyed.copy()
    digest.update(text.encode("utf-8"))
    return str(digest.hexdigest())


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def now_iso() -> str:
    """The current UTC time, ISO 8601 with microseconds and Z (2026-12-01T10:00:00.123456Z);
    the whole second's text is formatted once per second."""
    micro = time.time_ns() // 1000
    second, fraction = divmod(micro, 1_000_000)
    if second != _second[0]:
        _second[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{fraction:06d}Z"


def desensitise(array: np.ndarray, rule: Rule, key: Callable[[], bytes],
                pattern: re.Pattern[str],
                known: Vocabulary | None = None) -> Any:
    """What the record keeps of one input (`array`: batch first) under `rule`: JSON-ready
    lists, a mapping for summary/hash/bucket. `key` gives the deployment's hash key (read only
    when a rule hashes); `known` the model's vocabulary (summary's `oov`)."""
    text = array.dtype.kind in "OSU"
    if rule.kind == KEEP:
        return _shaped(_texts(array), array.shape) if text else _numbers(array)
    if rule.kind == HASH:
        secret = key()
        return {"hash": _shaped([keyed_hash(secret, t) if text else
                                 keyed_hash(secret, repr(t)) for t in
                                 (_texts(array) if text else array.reshape(-1).tolist())],
                                array.shape)}
    if rule.kind == SUMMARY:
        texts, secret = _texts(array), key()
        tokens = [pattern.findall(t) for t in texts]
        return {"length": _shaped([len(t) for t in texts], array.shape),
                "tokens": _shaped([len(found) for found in tokens], array.shape),
                **({"oov": _shaped([oov_share(found, known) for found in tokens], array.shape)}
                   if known is not None else {}),
                "hash": _shaped([keyed_hash(secret, t) for t in texts], array.shape)}
    if rule.kind == ROUND:
        return np.round(array.astype(np.float64), rule.digits).tolist()
    if rule.kind == BUCKET:
        return {"bucket": np.digitize(array.astype(np.float64), rule.edges).tolist(),
                "edges": list(rule.edges)}
    raise ValueError(f"unknown rule {rule.kind!r}")


_SUMMARY_RULE, _KEEP_RULE = Rule(SUMMARY), Rule(KEEP)


def default_rule(datatype: str) -> Rule:
    """A BYTES input's default rule is summary (never the text); a number's is keep."""
    return _SUMMARY_RULE if datatype == "BYTES" else _KEEP_RULE


def build(manifest: Manifest, config: CaptureConfig, inputs: Mapping[str, np.ndarray],
          results: Mapping[str, np.ndarray], rows: np.ndarray | None, request_id: str | None,
          path: str, key: Callable[[], bytes], pattern: re.Pattern[str],
          job_id: str | None = None) -> bytes:
    """One record as a JSON line (UTF-8, ending in a line break), of the rows `rows` picks
    (None: all), with `job_id` after `path` when a batch job's. Raises what numpy or json
    raise on data they cannot hold (the hook counts it as dropped)."""
    def pick(array: np.ndarray) -> np.ndarray:
        return array if rows is None else array[rows]

    record: dict[str, Any] = {
        MARKER: FORMAT, "model": manifest.name, "version": manifest.version,
        "time": now_iso(), "request_id": os.urandom(16).hex(), "id": request_id, "path": path}
    if job_id is not None:
        record["job_id"] = job_id
    record["rows"] = (len(rows) if rows is not None else
                      int(next(iter(inputs.values())).shape[0]) if inputs else 0)
    if config.inputs:
        kept: dict[str, Any] = {}
        for spec in manifest.inputs:
            array = inputs.get(spec.name)
            rule = config.rules.get(spec.name) or default_rule(spec.datatype)
            if array is None or rule.kind == DROP:
                continue
            kept[spec.name] = desensitise(pick(array), rule, key, pattern,
                                          vocabulary(manifest) if rule.kind == SUMMARY
                                          else None)
        record["inputs"] = kept
    if config.outputs:
        record["outputs"] = {
            spec.name: (_shaped(_texts(pick(results[spec.name])), pick(results[spec.name]).shape)
                        if results[spec.name].dtype.kind in "OSU" else
                        _numbers(pick(results[spec.name])))
            for spec in manifest.outputs if spec.name in results}
    # orjson: compact UTF-8 JSON as json.dumps(separators=(",", ":"), ensure_ascii=False)
    # writes it, a tenth of the time (NaN and infinities become null: valid JSON); numeric
    # arrays at their own precision (_numbers).
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)
