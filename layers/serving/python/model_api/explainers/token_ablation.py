"""`token_ablation`: each token of a text input removed in turn (its characters replaced by
one space); its attribution is the drop in the target's output.

Tokens are found with the model's own tokenizer pattern when the exporter could read it from the
graph (the ONNX Tokenizer node's `tokenexp`), else with DEFAULT_TOKEN_PATTERN (runs of Unicode
word characters). `base_value` is the output with every token removed. One run of T + 2 texts
per row. Not additive. Reads the manifest's `explanation.input` and `token_pattern`; adds the
output `tokens` (BYTES [rows, T]) beside `attributions` (FP32 [rows, T]).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from model_api.datatypes import BYTES
from model_api.errors import NotReady, TooLarge
from model_api.explainers.base import (
    Explainer,
    Explanation,
    ExplanationError,
    Options,
    Predictor,
    named_input,
)
from model_api.limits import MAX_EXPLAIN_MODEL_ROWS, MAX_EXPLAIN_TOKENS
from model_api.manifest import Manifest
from model_api.tokens import compile_token_pattern

TOKEN_ABLATION = "token_ablation"
# Runs of Unicode word characters: the split used when a text model's tokenizer is unreadable.
DEFAULT_TOKEN_PATTERN = r"\w+"


class TokenAblationExplainer(Explainer):
    """Token ablation of a BYTES text input: each token removed in turn."""

    method = TOKEN_ABLATION
    manifest_fields = ("input", "token_pattern")
    per_input_outputs = (("attributions", "FP32", (-1, -1)), ("tokens", BYTES, (-1, -1)))

    def __init__(self, manifest: Manifest, output: str, input_name: str,
                 pattern: str) -> None:
        super().__init__(manifest, output)
        spec = manifest.input(input_name)
        assert spec is not None
        self.input = spec
        self.token_pattern = pattern

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """The tokenizer's pattern, compiled on the first explanation: a tokenizer's pattern
        (every Unicode word character spelled out) takes 4 ms to compile, which a cold start's
        first /infer never needs. NotReady (503, counted as a server error) when it is not a
        regular expression."""
        try:
            return compile_token_pattern(self.token_pattern)
        except re.error as exc:
            raise NotReady(f"explanations of {self.manifest.name!r} cannot be computed: "
                           f"explanation.token_pattern {self.token_pattern!r:.80}: {exc}"
                           ) from exc

    @classmethod
    def from_manifest(cls, manifest: Manifest, section: Mapping[str, Any],
                      version_dir: Path) -> TokenAblationExplainer:
        """ExplanationError unless `explanation.input` names an input and `token_pattern`
        (default DEFAULT_TOKEN_PATTERN) is a string; it is compiled on the first explanation
        (`pattern`)."""
        name = named_input(manifest, section)
        pattern = section.get("token_pattern", DEFAULT_TOKEN_PATTERN)
        if not isinstance(pattern, str):
            raise ExplanationError(f"explanation.token_pattern must be a regular expression, "
                                   f"got {pattern!r:.80}")
        return cls(manifest, section["output"], name, pattern)

    def tokens(self, text: str) -> list[re.Match[str]]:
        """The tokens of `text` as the model's tokenizer (or the documented split) finds them;
        TooLarge over MAX_EXPLAIN_TOKENS (never silently truncated)."""
        found = list(self.pattern.finditer(text))
        if len(found) > MAX_EXPLAIN_TOKENS:
            raise TooLarge(f"a text of input '{self.input.name}' has {len(found)} tokens; "
                           f"token ablation explains at most {MAX_EXPLAIN_TOKENS} per text")
        return found

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        x = inputs[self.input.name]
        texts = [str(text) for text in x.reshape(rows)]
        found = [self.tokens(text) for text in texts]
        batch: list[str] = []
        for text, matches in zip(texts, found, strict=True):
            batch.append(text)
            batch.append(_without(text, matches))
            batch.extend(_without(text, [match]) for match in matches)
        if len(batch) > MAX_EXPLAIN_MODEL_ROWS:
            raise TooLarge(f"{len(batch)} ablated texts is over the limit of "
                           f"{MAX_EXPLAIN_MODEL_ROWS} model evaluations per request")
        array = np.array(batch, dtype=object).reshape(len(batch), *x.shape[1:])
        scores = predict({self.input.name: array})
        width = max((len(matches) for matches in found), default=0)
        attributions = np.zeros((rows, width))
        tokens = np.full((rows, width), "", dtype=object)
        starts = np.cumsum([0] + [len(matches) + 2 for matches in found])
        own = scores[starts[:-1]]
        target = self._targets(own, options)
        base = scores[starts[:-1] + 1, target]
        for row, matches in enumerate(found):
            ablated = scores[starts[row] + 2:starts[row + 1], target[row]]
            attributions[row, :len(matches)] = own[row, target[row]] - ablated
            tokens[row, :len(matches)] = [match.group() for match in matches]
        return self._explanation({self.input.name: attributions}, base, target, own,
                            {self.input.name: tokens})


def _without(text: str, matches: Sequence[re.Match[str]]) -> str:
    """`text` with the spans of `matches` (in order) replaced by one space each."""
    parts, end = [], 0
    for match in matches:
        parts.append(text[end:match.start()])
        parts.append(" ")
        end = match.end()
    parts.append(text[end:])
    return "".join(parts)


EXPLAINER = TokenAblationExplainer
