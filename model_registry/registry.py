"""Read, check and write models.yaml, the one place a served model is declared."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from model_api.capture.config import CaptureConfig, CaptureConfigError, check_inputs
from model_api.capture.config import parse as parse_capture
from model_api.manifest import MANIFEST_FILE, load_manifest
from model_api.names import MAX_MODEL_NAME_CHARS, MODEL_NAME, VERSION, camel_name

from model_registry.quotas import ACCOUNT_CONCURRENCY, GROUP_SIZE, UNRESERVED_MINIMUM

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_FILE = "models.yaml"
REGISTRY = ROOT / REGISTRY_FILE


class RegistryError(ValueError):
    """models.yaml (or an addition to it) is not valid; the message says what to fix."""


def run(main: Callable[[], int]) -> int:
    """Run a command-line entry point that reads models.yaml: a RegistryError is its message on
    stderr and exit status 2, never a traceback."""
    try:
        return main()
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


@dataclass(frozen=True)
class Project:
    """Where a project keeps each file the registry drives (a test's copy lives in tmp_path)."""

    root: Path = ROOT

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FILE

    @property
    def template(self) -> Path:
        return self.root / "template.yaml"

    @property
    def stacks(self) -> Path:
        """The generated nested stacks, one per group of models (model_registry.template)."""
        return self.root / STACKS

    @property
    def events(self) -> Path:
        return self.root / "events"

    @property
    def openapi(self) -> Path:
        return self.root / "docs" / "openapi.json"

    @property
    def models_dir(self) -> Path:
        """Exported versions, `<name>/<version>/`: build output, rebuilt by `make models`."""
        return self.root / "build" / "models"

    @property
    def store(self) -> Path:
        """Added model files, `<name>/<version>/model.onnx` (+ examples.json): kept in the
        repository, so a fresh clone rebuilds every added version from them."""
        return self.root / STORE


STORE = "model_store"
STACKS = "stacks"
# Where the exported version (name, version) is: build/models/<name>/<version> once written, a
# staging folder while add-model still checks it.
Locate = Callable[[str, str], Path]


def exported(models_dir: Path) -> Locate:
    return lambda name, version: models_dir / name / version


PROJECT = Project()
EXPORTED = exported(PROJECT.models_dir)


def check_capture_inputs(entry: ModelEntry, locate: Locate) -> None:
    """RegistryError when the model's capture rules do not fit the inputs of one of its
    versions, as exported where `locate` finds them (model_api.capture.config.check_inputs):
    a rule that names an input the version lacks (a misspelt `drop` would otherwise leave the
    input it meant kept in full; the functions keep no record then, capture.hook) or a rule
    of the wrong kind for the input's datatype. `check` cannot see this: it reads no export."""
    config = entry.capture_config
    if not config.rules:
        return
    for version in entry.versions:
        manifest = load_manifest(locate(entry.name, version) / MANIFEST_FILE)
        try:
            check_inputs(config, manifest.inputs,
                         f"{entry.name} (models.yaml) version {version}: capture")
        except CaptureConfigError as exc:
            raise RegistryError(str(exc)) from exc


@dataclass(frozen=True)
class ModelEntry:
    """One served model. `source` seed: trained by model_export/ (its recipe versions); onnx:
    added with `make add-model`. `files[version]` records a version added from a file (any
    version of an onnx model; versions beside the recipes' of a seed model): its path under
    model_store/ and its sha256. `group`: the nested stack (and REST API) that serves it,
    `stacks/models-<group>.yaml`, kept for the model's life so its URL never moves
    (model_registry.groups). `reserved_concurrency`: concurrent executions reserved for (and
    capping) its function; None: the template's FunctionReservedConcurrency. `capture`: its
    data capture settings (model_api.capture.config; None: capture off)."""

    name: str
    source: Literal["seed", "onnx"]
    versions: list[str]
    current: str
    # For source "onnx": where each version's file came from and its sha256, and class labels;
    # for a seed model, its versions published by `make optimize` (the others are trained).
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: list[str] | None = None
    group: int = 0
    reserved_concurrency: int | None = None
    capture: dict[str, Any] | None = None

    @property
    def capture_config(self) -> CaptureConfig:
        """The parsed `capture` settings (checked by `check`)."""
        return parse_capture(self.capture, f"{self.name}: capture")

    @property
    def camel(self) -> str:
        """The model's name in logical IDs: breast-cancer-mlp -> BreastCancerMlp."""
        return camel_name(self.name)


def check(entry: ModelEntry) -> ModelEntry:
    if not MODEL_NAME.fullmatch(entry.name):
        raise RegistryError(f"model name {entry.name!r}: use lower-case words joined by "
                            "hyphens, e.g. my-model-2")
    if len(entry.name) > MAX_MODEL_NAME_CHARS:
        raise RegistryError(f"model name {entry.name!r}: at most {MAX_MODEL_NAME_CHARS} "
                            "characters (its Lambda function's name is the deployment's prefix "
                            "and the model's name, at most 64)")
    if entry.source not in ("seed", "onnx"):
        raise RegistryError(
            f"{entry.name}: source must be 'seed' or 'onnx', not {entry.source!r}")
    if not entry.versions:
        raise RegistryError(f"{entry.name}: list at least one version")
    for version in entry.versions:
        if not VERSION.fullmatch(version):
            raise RegistryError(f"{entry.name}: version {version!r} must be 1-32 characters "
                                "of [0-9A-Za-z._-]")
    if entry.current not in entry.versions:
        raise RegistryError(f"{entry.name}: current version {entry.current!r} is not among "
                            f"{entry.versions}")
    if not isinstance(entry.group, int) or isinstance(entry.group, bool) or entry.group < 0:
        raise RegistryError(f"{entry.name}: group must be a whole number >= 0, not "
                            f"{entry.group!r}")
    if entry.reserved_concurrency is not None and (
            not isinstance(entry.reserved_concurrency, int)
            or isinstance(entry.reserved_concurrency, bool) or entry.reserved_concurrency < 1):
        raise RegistryError(f"{entry.name}: reserved_concurrency must be a whole number >= 1 "
                            f"(leave it out to reserve none), not {entry.reserved_concurrency!r}")
    try:
        entry.capture_config  # noqa: B018  (parsed to check it)
    except CaptureConfigError as exc:
        raise RegistryError(str(exc)) from exc
    if entry.source == "onnx" and set(entry.files) != set(entry.versions):
        raise RegistryError(
            f"{entry.name}: every version of an onnx model needs its file and sha256")
    if not set(entry.files) <= set(entry.versions):
        raise RegistryError(f"{entry.name}: files for versions it does not list: "
                            f"{sorted(set(entry.files) - set(entry.versions))}")
    for version, record in entry.files.items():
        for key in ("path", *(k for k in ("background", "fields", "data") if k in record)):
            path = Path(record.get(key, ""))
            if path.is_absolute() or ".." in path.parts or path.parts[:1] != (STORE,):
                raise RegistryError(
                    f"{entry.name} version {version}: file {record.get(key)!r} must be a path "
                    f"under {STORE}/ relative to the repository (no machine-specific paths)")
    return entry


class _PlainLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """yaml's safe loader (libyaml's where PyYAML has it: a registry of hundreds of models loads
    in milliseconds) with the pristine constructor table: SAM CLI's yamlhelper (imported by the
    local API's template reader) makes the global SafeLoader build OrderedDicts, which
    `yaml.safe_dump` then refuses to write back into models.yaml."""

    yaml_constructors: ClassVar[dict[Any, Any]] = dict(
        yaml.constructor.SafeConstructor.yaml_constructors)


def load(path: Path = REGISTRY) -> list[ModelEntry]:
    raw: dict[str, Any] = yaml.load(path.read_text(), Loader=_PlainLoader) or {}
    entries = []
    for item in raw.get("models") or []:
        item = dict(item)
        item["versions"] = [str(v) for v in item.get("versions", [])]
        item["current"] = str(item.get("current", ""))
        try:
            entries.append(check(ModelEntry(**item)))
        except TypeError as exc:
            raise RegistryError(f"{path}: entry {item.get('name')!r}: {exc}") from exc
    names = [e.name for e in entries]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RegistryError(f"{path}: models listed twice: {sorted(duplicates)}")
    camels = [e.camel for e in entries]
    if len(set(camels)) != len(camels):
        raise RegistryError(f"{path}: two model names map to the same logical ID")
    sizes = Counter(e.group for e in entries)
    full = {group: size for group, size in sizes.items() if size > GROUP_SIZE}
    if full:
        raise RegistryError(f"{path}: groups {full} hold more than {GROUP_SIZE} models (one "
                            "nested stack and REST API each; model_registry.quotas)")
    reserved = sum(e.reserved_concurrency or 0 for e in entries)
    if reserved > ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM:
        raise RegistryError(
            f"{path}: the models reserve {reserved} concurrent executions in all; an account's "
            f"default {ACCOUNT_CONCURRENCY} must leave {UNRESERVED_MINIMUM} unreserved")
    return entries


def free_group(entries: list[ModelEntry]) -> int:
    """The group a new model joins: the lowest one with room (a removal leaves room), else a
    new one. Groups never move a model: its function and URL stay where they are."""
    sizes = Counter(e.group for e in entries)
    return next(group for group in range(len(entries) + 1) if sizes[group] < GROUP_SIZE)


def dump(entries: list[ModelEntry], path: Path = REGISTRY) -> str:
    """models.yaml's text for `entries`, keeping the header comment of the file at `path`."""
    header = "".join(line for line in path.read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    items = []
    for entry in entries:
        item = {k: v for k, v in asdict(check(entry)).items() if v not in (None, {}, [])}
        item["group"] = entry.group  # written even when 0: a model's group never changes
        items.append(item)
    # libyaml's emitter where PyYAML has it: the same text as safe_dump, a third of the time.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return header + yaml.dump({"models": items}, Dumper=dumper, sort_keys=False,
                              default_flow_style=None)


def save(entries: list[ModelEntry], path: Path = REGISTRY) -> None:
    """Rewrite the entries of models.yaml, keeping its header comment."""
    path.write_text(dump(entries, path))
