"""The capture hook (model_api.pipeline.Hook): after the model, sample the exchange's rows
first (nothing else is done for an unsampled request), build the record (model_api.capture.
record) and keep it in memory; at flush (the end of an API request, of a batch chunk) hand each
model's records to the sink (`Sink`) and count them.

What is captured is what the model was asked to predict and answered: /infer requests and
batch rows. Not an /explain call (its rows are most often ones already predicted: captured
twice, drift would weigh them twice), and not a request answered with an error (the pipeline
calls after_model once the answer is made: a NaN in a JSON output is a 400, not a record).

Sinks: on a Lambda function, one line per record on stdout (model_api.aws.capture.LogSink:
CloudWatch Logs keeps it after the function returns, and a subscription sends it on to the
capture bucket, so nothing waits on the request path); for the batch runner and local tests, a
store (`StoreSink`: one JSON Lines object per flush and model).

Counts, per model, passed to the caller's `emit` (Powertools metrics on AWS) at a flush, once
`emit_every` seconds have passed since the last time (0: every flush) or when a record was
dropped:
`captured` (records built), `delivered` (records the sink accepted) and `dropped` with a
reason: `store_error` (the sink refused or failed: its error type is logged, never the data),
`too_large` (a record over the sink's `max_record_bytes`), `unserialisable` (a value JSON cannot
hold), `hash_key_loading` (a record that hashes, asked for before the key has arrived: a key
read from a secret store is fetched in the background, HashKeyLoading), `record_error`
(anything else while building it, e.g. no hash key could be read), `buffer_full` (more than
MAX_BUFFERED_BYTES waiting for one flush), `config_mismatch` (the model's settings do not fit
the version's inputs: a rule names an input it lacks, e.g. misspelt, or a rule of the wrong
kind for its datatype, capture.config.check_inputs; the registry refuses such settings, and a
function that gets them anyway keeps no record, rather than keep in full an input that a rule
meant to drop or hash; logged once per version, with the reason). A failure never reaches the
answer: the pipeline isolates hooks, and this hook catches its own failures to count them.

A record that could only be dropped as too_large is not built: the hook keeps, per model, the
bytes per row of a record (a probe of PROBE_ROWS rows before the first exchange of more
sampled rows; then the last record that was too large), and a later exchange whose sampled
rows would make a record more than TOO_LARGE_MARGIN times the sink's limit is counted
too_large at once. (A batch chunk of .npy rows is one exchange of tens of thousands of rows:
its sampled rows made a record of several MiB, built, serialised and then dropped, at every
chunk, which cost the runner about as much as the model's runs; docs/performance.md,
"Batch".)
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import numpy as np

from model_api.capture import record
from model_api.capture.config import CaptureConfig, CaptureConfigError, check_inputs
from model_api.capture.store import CaptureStore, object_key
from model_api.manifest import Manifest
from model_api.pipeline import Exchange, Hook

logger = logging.getLogger(__name__)
# Records waiting for one flush, in bytes (a batch chunk's sampled rows): past it, dropped.
MAX_BUFFERED_BYTES = 16 << 20
KEY_RETRY_S = 60.0


class HashKeyLoading(RuntimeError):
    """Raised by a hook's `key()` while the hash key is still being fetched (in the background,
    off the request's path): the record is dropped (hash_key_loading), the key asked for again
    by the next record, with no KEY_RETRY_S wait."""
# A record estimated (from the model's last record's bytes per row) at more than this many
# times the sink's limit is counted too_large without being built.
TOO_LARGE_MARGIN = 2.0
# An exchange of more sampled rows than this, of a model whose bytes per row are not known
# yet, first gets a record of this many of them built to learn it (CaptureHook._probe).
PROBE_ROWS = 64
CAPTURED, DELIVERED, DROPPED = "captured", "delivered", "dropped"
# (model, outcome, reason) -> records; reason is "" unless outcome is dropped.
Counts = Counter[tuple[str, str, str]]


class Sink(Protocol):
    """Where a flush's records go."""

    # A record (one JSON line, bytes) over this is dropped as too_large.
    max_record_bytes: int

    def deliver(self, model: str, lines: list[bytes]) -> None:
        """Hand on one model's records (JSON lines, each ending in a line break); raises on
        failure (the hook counts them dropped, store_error)."""


class StoreSink:
    """Records to a store (model_api.capture.store): one JSON Lines object per flush and model,
    under its date-partitioned key (in batch job `job_id`'s folder when given)."""

    max_record_bytes = record.MAX_RECORD_BYTES

    def __init__(self, store: CaptureStore, job_id: str | None = None) -> None:
        self.store, self.job_id = store, job_id

    def deliver(self, model: str, lines: list[bytes]) -> None:
        self.store.put(object_key(model, job_id=self.job_id), b"".join(lines))


class CaptureHook(Hook):
    """Captures sampled rows of each exchange into `sink` (a Sink, or a store, wrapped in a
    StoreSink); see the module's docstring.

    `configs(model)` gives a model's settings (one model's from the environment on a model
    function; the registry's on the batch runner); `key()` the deployment's hash key (called
    on the first record that hashes); `emit(counts)` publishes the counts at each flush;
    `job_id`: the batch job whose exchanges these are (each record carries it)."""

    name = "capture"

    def __init__(self, configs: Callable[[str], CaptureConfig], sink: Sink | CaptureStore,
                 key: Callable[[], bytes], emit: Callable[[Counts], None] = lambda _: None,
                 rng: random.Random | None = None, emit_every: float = 0.0,
                 job_id: str | None = None) -> None:
        self.configs, self.emit, self.emit_every = configs, emit, emit_every
        self.job_id = job_id
        self.emitted = time.monotonic()
        self.sink: Sink = sink if hasattr(sink, "deliver") else StoreSink(sink, job_id)  # type: ignore[assignment]
        self._key, self._secret, self._key_retry_at = key, b"", 0.0
        self.random = rng or random.Random()
        self.buffered: dict[str, list[bytes]] = {}
        self.buffered_bytes = 0
        self.counts: Counts = Counter()
        self._patterns: dict[tuple[str, str], re.Pattern[str]] = {}
        # per model and version: the settings it was checked with, and whether they fit it
        self._fits: dict[tuple[str, str], tuple[CaptureConfig, bool]] = {}
        self._row_bytes: dict[str, float] = {}  # per model: a too-large record's bytes/row

    def key(self) -> bytes:
        """The hash key, read once; after a failed read, records that hash are dropped
        (record_error) for KEY_RETRY_S before it is tried again, so that a missing secret
        never costs a call per request."""
        if not self._secret:
            if time.monotonic() < self._key_retry_at:
                raise RuntimeError("the capture hash key could not be read; retrying later")
            try:
                self._secret = self._key()
            except HashKeyLoading:
                raise
            except Exception:
                self._key_retry_at = time.monotonic() + KEY_RETRY_S
                raise
        return self._secret

    def _rows(self, share: float, rows: int) -> np.ndarray | bool | None:
        """Which rows are sampled: False none, None all, else their indices."""
        if share >= 100:
            return None
        if rows == 1:
            return None if self.random.random() * 100 < share else False
        picked = np.flatnonzero(np.random.default_rng(self.random.getrandbits(64))
                                .random(rows) * 100 < share)
        return picked if picked.size else False

    def after_model(self, exchange: Exchange) -> None:
        # What the model is asked to predict: an explanation's rows are most often rows
        # already predicted (and captured); captured again, drift would weigh them twice
        if exchange.explain:
            return
        config = self.configs(exchange.model.manifest.name)
        if not config.active or exchange.rows == 0:
            return
        rows = self._rows(config.sampling, exchange.rows)
        if rows is False:
            return
        manifest = exchange.model.manifest
        model = manifest.name
        if not self._fit(config, manifest):
            self.counts[model, DROPPED, "config_mismatch"] += 1
            return
        sampled = exchange.rows if rows is None else len(rows)  # type: ignore[arg-type]
        pattern = self._patterns.get((model, manifest.version))
        if pattern is None:
            pattern = self._patterns[model, manifest.version] = record.token_pattern(manifest)
        if sampled > PROBE_ROWS and model not in self._row_bytes:
            self._probe(exchange, config, rows, pattern)  # type: ignore[arg-type]
        if sampled * self._row_bytes.get(model, 0.0) > (TOO_LARGE_MARGIN
                                                        * self.sink.max_record_bytes):
            self.counts[model, CAPTURED, ""] += 1
            self.counts[model, DROPPED, "too_large"] += 1
            return
        try:
            line = record.build(manifest, config, exchange.request.inputs, exchange.results,
                                None if rows is None else rows,  # type: ignore[arg-type]
                                exchange.request.id, exchange.path, self.key, pattern,
                                self.job_id)
        except Exception as error:  # counted and logged by type, never with the data
            reason = ("unserialisable" if isinstance(error, TypeError | ValueError |
                                                     OverflowError) else
                      "hash_key_loading" if isinstance(error, HashKeyLoading) else
                      "record_error")
            self.counts[model, DROPPED, reason] += 1
            logger.warning("capture: a record of %s was not built (%s)", model,
                           type(error).__name__)
            return
        self.counts[model, CAPTURED, ""] += 1
        if len(line) > self.sink.max_record_bytes:
            # learnt from a record over the limit, of many rows: its fixed part is negligible
            self._row_bytes[model] = len(line) / sampled
            self.counts[model, DROPPED, "too_large"] += 1
            return
        if self.buffered_bytes + len(line) > MAX_BUFFERED_BYTES:
            self.counts[model, DROPPED, "buffer_full"] += 1
            return
        self.buffered.setdefault(model, []).append(line)
        self.buffered_bytes += len(line)

    def _fit(self, config: CaptureConfig, manifest: Manifest) -> bool:
        """Whether `config`'s rules fit the inputs of `manifest`'s version (checked once per
        version and settings; a misfit is logged then, naming the rule and the inputs)."""
        key = manifest.name, manifest.version
        known = self._fits.get(key)
        if known is not None and known[0] is config:
            return known[1]
        try:
            check_inputs(config, manifest.inputs,
                         f"{manifest.name} version {manifest.version}: capture")
        except CaptureConfigError as error:
            logger.error("capture: no record of %s is kept: %s", manifest.name, error)
            fits = False
        else:
            fits = True
        self._fits[key] = config, fits
        return fits

    def _probe(self, exchange: Exchange, config: CaptureConfig, rows: np.ndarray | None,
               pattern: re.Pattern[str]) -> None:
        """Learn the model's bytes per record row from a record of PROBE_ROWS of the sampled
        rows (not kept), before a record of many rows is built; a probe that fails teaches
        nothing (the record's own build then fails and is counted)."""
        picked = np.arange(PROBE_ROWS) if rows is None else rows[:PROBE_ROWS]
        try:
            line = record.build(exchange.model.manifest, config, exchange.request.inputs,
                                exchange.results, picked, exchange.request.id, exchange.path,
                                self.key, pattern)
        except Exception:  # the record's own build says why, and counts it
            return
        self._row_bytes[exchange.model.manifest.name] = len(line) / PROBE_ROWS

    def flush(self) -> None:
        buffered, self.buffered, self.buffered_bytes = self.buffered, {}, 0
        for model, lines in buffered.items():
            try:
                self.sink.deliver(model, lines)
            except Exception as error:  # a store that fails never fails an answer
                self.counts[model, DROPPED, "store_error"] += len(lines)
                logger.error("capture: %d record(s) of %s not stored (%s)", len(lines), model,
                             type(error).__name__)
            else:
                self.counts[model, DELIVERED, ""] += len(lines)
        if self.counts:
            now = time.monotonic()
            if (now - self.emitted >= self.emit_every
                    or any(outcome == DROPPED for _, outcome, _ in self.counts)):
                counts, self.counts, self.emitted = self.counts, Counter(), now
                self.emit(counts)
