"""A model's capture settings: models.yaml's `capture` mapping, checked here for the registry
(model_registry.registry), the template (one environment variable per model function) and the
batch runner alike.

    capture:
      enabled: true          # default true when the mapping is given; false: nothing is kept
      sampling: 20           # percent of rows captured, 0 to 100 (default 20)
      inputs: true           # keep the inputs (desensitised by `rules`)
      outputs: true          # keep the outputs
      rules:                 # per input, what is kept of it (the defaults below)
        text: summary        # BYTES: length, tokens, a keyed hash (never the text)
        features: {round: 2} # numbers: rounded to 2 decimals
        age: {bucket: [18, 30, 50]}   # numbers: the bin index (numpy.digitize) of each value

Rules: `keep` (as the model saw it), `drop` (not kept), `hash` (HMAC-SHA256 of each value,
keyed per deployment), `summary` (BYTES only: length in characters, token count, the keyed
hash), `{round: n}` and `{bucket: [edges]}` (numbers only). A BYTES input's default is
`summary`; a number's is `keep`. Its environment form (CAPTURE_ENV) is the same mapping as
compact JSON.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from model_api.manifest import TensorSpec

CAPTURE_ENV = "CAPTURE"
# Overrides every model's sampling percentage (make serve sets 100, CAPTURE=0 sets 0).
SAMPLING_ENV = "CAPTURE_SAMPLING"
DEFAULT_SAMPLING = 20.0
KEEP, DROP, HASH, SUMMARY, ROUND, BUCKET = "keep", "drop", "hash", "summary", "round", "bucket"
NAMED_RULES = (KEEP, DROP, HASH, SUMMARY)
MAX_BUCKET_EDGES = 64
MAX_ROUND_DIGITS = 12
_FIELDS = ("enabled", "sampling", "inputs", "outputs", "rules")


class CaptureConfigError(ValueError):
    """A capture mapping that breaks the format above; the message names the field."""


class Rule(msgspec.Struct, frozen=True):
    """What is kept of one input: `kind` one of keep, drop, hash, summary, round, bucket;
    `digits` (round) or `edges` (bucket, ascending)."""

    kind: str
    digits: int = 0
    edges: tuple[float, ...] = ()

    def document(self) -> str | dict[str, Any]:
        if self.kind == ROUND:
            return {ROUND: self.digits}
        if self.kind == BUCKET:
            return {BUCKET: list(self.edges)}
        return self.kind


class CaptureConfig(msgspec.Struct, frozen=True):
    """One model's capture settings (see the module's docstring)."""

    enabled: bool = False
    sampling: float = DEFAULT_SAMPLING
    inputs: bool = True
    outputs: bool = True
    rules: Mapping[str, Rule] = msgspec.field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether any row is ever captured."""
        return self.enabled and self.sampling > 0 and (self.inputs or self.outputs)

    def document(self) -> dict[str, Any]:
        """The mapping form (models.yaml, and the environment's JSON)."""
        return {"enabled": self.enabled, "sampling": self.sampling, "inputs": self.inputs,
                "outputs": self.outputs,
                **({"rules": {k: r.document() for k, r in self.rules.items()}}
                   if self.rules else {})}

    def to_environment(self) -> str:
        return json.dumps(self.document(), separators=(",", ":"), sort_keys=True)

    def with_sampling(self, sampling: float) -> CaptureConfig:
        return CaptureConfig(self.enabled, sampling, self.inputs, self.outputs, self.rules)


OFF = CaptureConfig(enabled=False)


def _rule(name: str, value: Any, where: str) -> Rule:
    if isinstance(value, str):
        if value not in NAMED_RULES:
            raise CaptureConfigError(
                f"{where}: rule of input {name!r} must be one of {', '.join(NAMED_RULES)}, "
                f"{{round: <digits>}} or {{bucket: [<edges>]}}, not {value!r}")
        return Rule(value)
    if isinstance(value, Mapping) and len(value) == 1:
        ((kind, argument),) = value.items()
        if kind == ROUND:
            if (not isinstance(argument, int) or isinstance(argument, bool)
                    or not 0 <= argument <= MAX_ROUND_DIGITS):
                raise CaptureConfigError(f"{where}: input {name!r}: round takes a whole number "
                                         f"of decimals, 0 to {MAX_ROUND_DIGITS}, not {argument!r}")
            return Rule(ROUND, digits=argument)
        if kind == BUCKET:
            if (not isinstance(argument, list) or not 1 <= len(argument) <= MAX_BUCKET_EDGES
                    or not all(isinstance(e, int | float) and not isinstance(e, bool)
                               for e in argument)
                    or any(b <= a for a, b in itertools.pairwise(argument))):
                raise CaptureConfigError(
                    f"{where}: input {name!r}: bucket takes a list of 1 to {MAX_BUCKET_EDGES} "
                    f"increasing numbers (the bin edges), not {argument!r}")
            return Rule(BUCKET, edges=tuple(float(e) for e in argument))
    raise CaptureConfigError(f"{where}: rule of input {name!r} must be one of "
                             f"{', '.join(NAMED_RULES)}, {{round: <digits>}} or "
                             f"{{bucket: [<edges>]}}, not {value!r}")


def parse(raw: Any, where: str = "capture") -> CaptureConfig:
    """The settings of a `capture` mapping (None: capture off). Raises CaptureConfigError
    naming `where` and the field when a field is unknown or out of range."""
    if raw is None:
        return OFF
    if not isinstance(raw, Mapping):
        raise CaptureConfigError(f"{where} must be a mapping of {', '.join(_FIELDS)}, "
                                 f"not {raw!r}")
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise CaptureConfigError(f"{where}: unknown field(s) {unknown}; the fields are "
                                 f"{', '.join(_FIELDS)}")
    for flag in ("enabled", "inputs", "outputs"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise CaptureConfigError(f"{where}.{flag} must be true or false, not {raw[flag]!r}")
    sampling = raw.get("sampling", DEFAULT_SAMPLING)
    if (not isinstance(sampling, int | float) or isinstance(sampling, bool)
            or not 0 <= sampling <= 100):
        raise CaptureConfigError(f"{where}.sampling is a percentage of rows, 0 to 100, not "
                                 f"{sampling!r}")
    rules = raw.get("rules") or {}
    if not isinstance(rules, Mapping):
        raise CaptureConfigError(f"{where}.rules must map input names to rules, not {rules!r}")
    return CaptureConfig(
        enabled=raw.get("enabled", True), sampling=float(sampling),
        inputs=raw.get("inputs", True), outputs=raw.get("outputs", True),
        rules={str(name): _rule(str(name), rule, f"{where}.rules") for name, rule in
               rules.items()})


def check_inputs(config: CaptureConfig, specs: Sequence[TensorSpec], where: str) -> None:
    """CaptureConfigError when a rule names an input the model lacks (`specs`: a manifest's
    inputs) or a number rule names a BYTES input, or `summary` a number."""
    inputs = {spec.name: spec.datatype for spec in specs}
    for name, rule in config.rules.items():
        if name not in inputs:
            raise CaptureConfigError(f"{where}.rules: the model has no input {name!r} (its "
                                     f"inputs: {', '.join(inputs)})")
        text = inputs[name] == "BYTES"
        if text and rule.kind in (ROUND, BUCKET):
            raise CaptureConfigError(f"{where}.rules: {rule.kind} is for numbers; input "
                                     f"{name!r} is BYTES (use summary, hash, drop or keep)")
        if not text and rule.kind == SUMMARY:
            raise CaptureConfigError(f"{where}.rules: summary is for BYTES inputs; input "
                                     f"{name!r} is {inputs[name]}")


def from_environment(environ: Mapping[str, str]) -> CaptureConfig:
    """The function's settings: CAPTURE (compact JSON; absent: off), its sampling replaced by
    CAPTURE_SAMPLING when set. CaptureConfigError when either is malformed."""
    text = environ.get(CAPTURE_ENV, "")
    try:
        config = parse(json.loads(text), CAPTURE_ENV) if text else OFF
    except ValueError as exc:
        raise CaptureConfigError(f"{CAPTURE_ENV} is not a capture mapping: {exc}") from exc
    return with_override(config, environ)


def with_override(config: CaptureConfig, environ: Mapping[str, str]) -> CaptureConfig:
    """`config` with CAPTURE_SAMPLING's percentage when set (a local override: make serve)."""
    override = environ.get(SAMPLING_ENV, "")
    if not override:
        return config
    try:
        sampling = float(override)
    except ValueError:
        sampling = -1.0
    if not 0 <= sampling <= 100:
        raise CaptureConfigError(f"{SAMPLING_ENV} is a percentage, 0 to 100, not {override!r}")
    if sampling and not config.enabled:  # a local override turns capture on
        config = CaptureConfig(True, sampling, config.inputs, config.outputs, config.rules)
    return config.with_sampling(sampling)
