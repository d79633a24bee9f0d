"""What every explanation method shares: the answer (Explanation), the request's options, the
Explainer base class a method module subclasses, and the `none` method (Unavailable).

A method's class declares, as class attributes, what the registry (explainers/__init__.py) and
the codec need to know about it without running it: `method` (the manifest's and the answer's
method string), `manifest_fields` (the keys of the manifest's `explanation` object it reads
besides `method` and `output`), `options` (the request parameters it accepts),
`explains_every_input` and `per_input_outputs` (the tensors it adds per explained input). Its
`from_manifest` classmethod builds it from the manifest at load, raising ExplanationError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import numpy as np

from model_api.errors import BadRequest, NotFound, TooLarge
from model_api.limits import MAX_EXPLAIN_ROWS, MAX_SHAP_SAMPLES
from model_api.manifest import Manifest

NONE = "none"  # the manifest's method for a model that cannot be explained as deployed

# A predictor: input arrays (a batch) -> the explained output as float64 [batch, classes].
Predictor = Callable[[dict[str, np.ndarray]], np.ndarray]


class ExplanationError(ValueError):
    """A manifest's `explanation` object or its background file is unusable (load time)."""


# arrays: compared by identity (no generated __eq__)
class Explanation(msgspec.Struct, frozen=True, eq=False):
    """The explanation of a batch of `rows` rows.

    `attributions` maps each explained input to FP32 [rows, *input shape without batch]
    ([rows, T] for a text input); `tokens` maps a text input to BYTES (object) [rows, T], padded
    with ""; `base_value` FP32 [rows]; `target` INT64 [rows]; `scores` FP64 [rows, classes]:
    the explained output on the rows themselves (the prediction explained; [rows, 1] for a
    regression); `manifest`: the model's (its labels and feature names).
    """

    method: str
    output: str
    attributions: dict[str, np.ndarray]
    base_value: np.ndarray
    target: np.ndarray
    scores: np.ndarray
    manifest: Manifest
    tokens: dict[str, np.ndarray] = msgspec.field(default_factory=dict)

    def outputs(self) -> dict[str, np.ndarray]:
        """The answer's extra outputs by name: `attributions` (or `attributions_<input>` for a
        model of several inputs), `tokens` likewise, `base_value`, `target`."""
        single = len(self.attributions) == 1
        named: dict[str, np.ndarray] = {}
        for name, values in self.attributions.items():
            named["attributions" if single else f"attributions_{name}"] = values
        for name, tokens in self.tokens.items():
            named["tokens" if single else f"tokens_{name}"] = tokens
        named["base_value"] = self.base_value
        named["target"] = self.target
        return named

    def parameters(self) -> dict[str, str]:
        """The answer's `parameters`: `method`, `explained_output`, and `summary`: one plain
        sentence per row (rows joined by newlines: a protocol parameter is a string), see
        `summary`."""
        return {"method": self.method, "explained_output": self.output,
                "summary": "\n".join(self.summary())}

    def summary(self) -> list[str]:
        """One sentence per row saying what pushed its prediction most, e.g. "Predicted benign
        (0.94), mostly because of worst area and worst concave points; mean texture pulled
        towards malignant." Features are named by the manifest's `feature_names` where it has
        them, a text input's tokens, an image's pixels (row, column, from 0), else `input[i]`;
        the two largest positive attributions are named, then the most negative one. A class
        the request named (`target`) other than the predicted one reads "Explaining <class>
        (<score>; predicted <class>)"."""
        names = self._feature_names()
        flat = np.concatenate([values.reshape(len(self.target), -1)
                               for values in self.attributions.values()], axis=1)
        return [self._sentence(row, flat[row], names[row]) for row in range(len(self.target))]

    def _sentence(self, row: int, values: np.ndarray, names: list[str]) -> str:
        target = int(self.target[row])
        classes = self.scores.shape[1]
        score = float(self.scores[row, target])
        if classes > 1:
            labels = self.manifest.labels or ()

            def name(index: int) -> str:
                return labels[index] if index < len(labels) else f"class {index}"

            label, predicted = name(target), int(np.argmax(self.scores[row]))
            # A target the request named (parameters.target) need not be the prediction
            head = f"Predicted {label} ({score:.2f})" if predicted == target else \
                f"Explaining {label} ({score:.2f}; predicted {name(predicted)})"
            if classes == 2:
                other = labels[1 - target] if len(labels) == 2 else f"class {1 - target}"
                against = f"pulled towards {other}"
            else:
                against = f"pulled away from {label}"
        else:
            head, against = f"Predicted {score:.4g}", "pulled it down"
        order = np.argsort(-values, kind="stable")
        pushed = [names[i] for i in order[:2] if values[i] > 0]
        pulled = [names[i] for i in order[::-1][:1] if values[i] < 0]
        sentence = head + (f", mostly because of {_listed(pushed)}" if pushed else
                           ", with no input pushing towards it")
        if pulled:
            sentence += f"; {_listed(pulled)} {against}"
        return sentence + "."

    def _feature_names(self) -> list[list[str]]:
        """Per row, a name for each attribution (in the order of the flattened inputs)."""
        rows = len(self.target)
        several = len(self.attributions) > 1
        named: list[list[str]] = [[] for _ in range(rows)]
        given = self.manifest.extra.get("feature_names")
        given = given if isinstance(given, Mapping) else {}
        for name, values in self.attributions.items():
            shape = values.shape[1:]
            prefix = f"{name} " if several else ""
            if name in self.tokens:
                for row in range(rows):
                    named[row] += [f"'{token}'" for token in self.tokens[name][row]]
                continue
            columns = given.get(name)
            if len(shape) == 1 and isinstance(columns, list) and len(columns) == shape[0]:
                labels = [prefix + str(column) for column in columns]
            elif len(shape) >= 2:  # an image: its last two axes are rows and columns
                labels = [f"{prefix}pixel (row {index[-2]}, col {index[-1]})"
                          for index in np.ndindex(*shape)]
            else:
                labels = [f"{name}[{index}]" for index in range(int(np.prod(shape)))]
            for row in range(rows):
                named[row] += labels
        return named


class Options(msgspec.Struct, frozen=True):
    """What a request may set: `target` (class index for every row; None: each row's
    predicted class) and `samples` (Kernel SHAP's coalitions per row; None: the default).
    A method accepts those its class lists in `options`."""

    target: int | None = None
    samples: int | None = None

    def given(self) -> list[str]:
        """The names of the options the request set (not None), in field order."""
        return [name for name in self.__struct_fields__ if getattr(self, name) is not None]


def request_options(parameters: Mapping[str, Any]) -> Options:
    """The explain options of a request's `parameters`; BadRequest if one is malformed."""
    target = parameters.get("target")
    if target is not None and (type(target) is not int or target < 0):
        raise BadRequest(f"parameter 'target' must be a class index (an integer >= 0), got "
                         f"{target!r:.40}")
    samples = parameters.get("samples")
    if samples is not None and (type(samples) is not int or not
                                1 <= samples <= MAX_SHAP_SAMPLES):
        raise BadRequest(f"parameter 'samples' must be an integer from 1 to {MAX_SHAP_SAMPLES} "
                         f"(Kernel SHAP's coalitions per row), got {samples!r:.40}")
    return Options(target, samples)


class Explainer:
    """One model's explanation method, checked against its manifest at load.

    A method subclasses it, sets the class attributes below and implements `from_manifest`
    and `_explain`; its module registers it (explainers/__init__.py, MODULES).
    """

    # The manifest's `explanation.method` and the answer's `parameters.method`.
    method: ClassVar[str] = NONE
    # Keys of the manifest's `explanation` object it reads, besides `method` and `output`.
    manifest_fields: ClassVar[tuple[str, ...]] = ()
    # The request options (fields of Options) it accepts; others are a 400 naming the methods
    # that take them.
    options: ClassVar[tuple[str, ...]] = ("target",)
    # True: it explains every input of the model; False: the one `explanation.input` names.
    explains_every_input: ClassVar[bool] = False
    # The tensors it adds per explained input: (base name, datatype, shape); shape None is the
    # input's own shape. Several explained inputs suffix each name with `_<input>`.
    per_input_outputs: ClassVar[tuple[tuple[str, str, tuple[int, ...] | None], ...]] = (
        ("attributions", "FP32", None),)

    def __init__(self, manifest: Manifest, output: str) -> None:
        self.manifest = manifest
        self.output = output

    @classmethod
    def from_manifest(cls, manifest: Manifest, section: Mapping[str, Any],
                      version_dir: Path) -> Explainer:
        """The explainer `section` (the manifest's `explanation` object, its `method` and
        `output` already checked) describes, reading any file it names from `version_dir`;
        ExplanationError saying what is malformed or missing."""
        raise NotImplementedError

    def explain(self, predict: Predictor, inputs: dict[str, np.ndarray],
                options: Options) -> Explanation:
        """Explain the rows of `inputs` (arrays that fit the manifest, same batch size).

        BadRequest for a target out of range or an option the method does not take; TooLarge
        over a limit of limits.py (MAX_EXPLAIN_ROWS, MAX_EXPLAIN_MODEL_ROWS,
        MAX_EXPLAIN_TOKENS).
        """
        rows = next(iter(inputs.values())).shape[0]
        if rows > MAX_EXPLAIN_ROWS:
            raise TooLarge(f"{rows} rows to explain; the limit is {MAX_EXPLAIN_ROWS} rows per "
                           "explain request (split it, or use the batch runner)")
        for name in options.given():
            if name not in self.options:
                raise BadRequest(f"parameter '{name}' applies to {_methods_taking(name)} only; "
                                 f"model '{self.manifest.name}' is explained by {self.method}")
        return self._explain(predict, inputs, options, rows)

    def _explain(self, predict: Predictor, inputs: dict[str, np.ndarray], options: Options,
                 rows: int) -> Explanation:
        raise NotImplementedError

    def _targets(self, scores: np.ndarray, options: Options) -> np.ndarray:
        """INT64 [rows]: the requested class, else each row's highest score (0: regression)."""
        classes = scores.shape[1]
        if options.target is None:
            return scores.argmax(axis=1).astype(np.int64)
        if options.target >= classes:
            raise BadRequest(f"parameter 'target' is {options.target}; output "
                             f"'{self.output}' has {classes} class(es): 0..{classes - 1}")
        return np.full(scores.shape[0], options.target, dtype=np.int64)

    def _explanation(self, attributions: dict[str, np.ndarray], base: np.ndarray,
                target: np.ndarray, scores: np.ndarray,
                tokens: dict[str, np.ndarray] | None = None) -> Explanation:
        """The Explanation of attributions per input, base values and targets [rows], and the
        explained output's `scores` [rows, classes] on the rows themselves."""
        return Explanation(self.method, self.output,
                           {k: v.astype(np.float32) for k, v in attributions.items()},
                           base.astype(np.float32), target,
                           np.asarray(scores, dtype=np.float64), self.manifest, tokens or {})


def _listed(names: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _methods_taking(option: str) -> str:
    """The methods whose class lists `option` in `options` ("a or b"), from the Explainer
    subclasses defined (the registry's modules define them all)."""
    found: list[str] = []
    pending = list(Explainer.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if option in cls.options and cls.method not in found:
            found.append(cls.method)
        pending.extend(cls.__subclasses__())
    return " or ".join(found) or "no method"


def named_input(manifest: Manifest, section: Mapping[str, Any]) -> str:
    """The input `section["input"]` names (for a method that explains one input);
    ExplanationError if it names none of the model's."""
    name = section.get("input")
    if not isinstance(name, str) or manifest.input(name) is None:
        raise ExplanationError(f"explanation.input {name!r} is not an input of the model")
    return name


class Unavailable(Explainer):
    """A model with nothing to explain with (method `none`, or no `explanation` at all): every
    explain request is a 404 saying why."""

    def __init__(self, manifest: Manifest, reason: str) -> None:
        super().__init__(manifest, "")
        self.reason = reason

    def explain(self, predict: Predictor, inputs: dict[str, np.ndarray],
                options: Options) -> Explanation:
        """NotFound, always, with the reason."""
        raise NotFound(f"model '{self.manifest.name}' version '{self.manifest.version}' has no "
                       f"explanations: {self.reason}")
