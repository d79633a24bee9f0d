"""The capture hook (model_api.pipeline.Hook): after the model, sample the exchange's rows
first (nothing else is done for an unsampled request), build the record (model_api.capture.
record) and keep it in memory; at flush (the end of an API request, of a batch chunk) write
each model's records as one JSON Lines object to the store, and count them.

Counts, per model, emitted at flush by the caller's `emit` (Powertools metrics on AWS):
`captured` (records built), `delivered` (records the store accepted) and `dropped` with a
reason: `store_error` (the store refused or failed: its error type is logged, never the data),
`too_large` (a record over MAX_RECORD_BYTES), `unserialisable` (a value JSON cannot hold),
`record_error` (anything else while building it, e.g. no hash key could be read),
`buffer_full` (more than MAX_BUFFERED_BYTES waiting for one flush). A failure never reaches
the answer: the pipeline isolates hooks, and this hook catches its own failures to count them.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Callable

import numpy as np

from model_api.capture import record
from model_api.capture.config import CaptureConfig
from model_api.capture.store import CaptureStore, object_key
from model_api.pipeline import Exchange, Hook

logger = logging.getLogger(__name__)
# Records waiting for one flush, in bytes (a batch chunk's sampled rows): past it, dropped.
MAX_BUFFERED_BYTES = 16 << 20
CAPTURED, DELIVERED, DROPPED = "captured", "delivered", "dropped"
# (model, outcome, reason) -> records; reason is "" unless outcome is dropped.
Counts = Counter[tuple[str, str, str]]


class CaptureHook(Hook):
    """Captures sampled rows of each exchange into `store`; see the module's docstring.

    `configs(model)` gives a model's settings (one model's from the environment on a model
    function; the registry's on the batch runner); `key()` the deployment's hash key (called
    on the first record that hashes); `emit(counts)` publishes the counts at each flush."""

    name = "capture"

    def __init__(self, configs: Callable[[str], CaptureConfig], store: CaptureStore,
                 key: Callable[[], bytes], emit: Callable[[Counts], None] = lambda _: None,
                 rng: random.Random | None = None) -> None:
        self.configs, self.store, self.emit = configs, store, emit
        self._key, self._secret = key, b""
        self.random = rng or random.Random()
        self.buffered: dict[str, list[bytes]] = {}
        self.buffered_bytes = 0
        self.counts: Counts = Counter()
        self._patterns: dict[tuple[str, str], re.Pattern[str]] = {}

    def key(self) -> bytes:
        if not self._secret:
            self._secret = self._key()
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
        config = self.configs(exchange.model.manifest.name)
        if not config.active or exchange.rows == 0:
            return
        rows = self._rows(config.sampling, exchange.rows)
        if rows is False:
            return
        manifest = exchange.model.manifest
        model = manifest.name
        pattern = self._patterns.get((model, manifest.version))
        if pattern is None:
            pattern = self._patterns[model, manifest.version] = record.token_pattern(manifest)
        try:
            line = record.build(manifest, config, exchange.request.inputs, exchange.results,
                                None if rows is None else rows,  # type: ignore[arg-type]
                                exchange.request.id, exchange.path, self.key, pattern)
        except Exception as error:  # counted and logged by type, never with the data
            reason = ("unserialisable" if isinstance(error, TypeError | ValueError |
                                                     OverflowError) else "record_error")
            self.counts[model, DROPPED, reason] += 1
            logger.warning("capture: a record of %s was not built (%s)", model,
                           type(error).__name__)
            return
        self.counts[model, CAPTURED, ""] += 1
        if len(line) > record.MAX_RECORD_BYTES:
            self.counts[model, DROPPED, "too_large"] += 1
            return
        if self.buffered_bytes + len(line) > MAX_BUFFERED_BYTES:
            self.counts[model, DROPPED, "buffer_full"] += 1
            return
        self.buffered.setdefault(model, []).append(line)
        self.buffered_bytes += len(line)

    def flush(self) -> None:
        buffered, self.buffered, self.buffered_bytes = self.buffered, {}, 0
        for model, lines in buffered.items():
            try:
                self.store.put(object_key(model), b"".join(lines))
            except Exception as error:  # a store that fails never fails an answer
                self.counts[model, DROPPED, "store_error"] += len(lines)
                logger.error("capture: %d record(s) of %s not stored (%s)", len(lines), model,
                             type(error).__name__)
            else:
                self.counts[model, DELIVERED, ""] += len(lines)
        if self.counts:
            counts, self.counts = self.counts, Counter()
            self.emit(counts)
