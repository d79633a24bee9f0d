"""Read, check and write models.yaml, the one place a served model is declared."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "models.yaml"
# Lower-case words joined by hyphens: valid in a URL, and it maps one-to-one onto a CloudFormation
# logical ID (breast-cancer-mlp -> BreastCancerMlp) because no word may be empty.
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")


class RegistryError(ValueError):
    """models.yaml (or an addition to it) is not valid; the message says what to fix."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: Literal["seed", "onnx"]
    versions: list[str]
    current: str
    # For source "onnx": where each version's file came from and its sha256, and class labels;
    # for a seed model, its versions published by `make optimize` (the others are trained).
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    labels: list[str] | None = None

    @property
    def camel(self) -> str:
        """The model's name in logical IDs: breast-cancer-mlp -> BreastCancerMlp."""
        return camel_name(self.name)


def camel_name(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


def check(entry: ModelEntry) -> ModelEntry:
    if not NAME.match(entry.name):
        raise RegistryError(f"model name {entry.name!r}: use lower-case words joined by "
                            "hyphens, e.g. my-model-2")
    if entry.source not in ("seed", "onnx"):
        raise RegistryError(
            f"{entry.name}: source must be 'seed' or 'onnx', not {entry.source!r}")
    if not entry.versions:
        raise RegistryError(f"{entry.name}: list at least one version")
    for version in entry.versions:
        if not VERSION.match(version):
            raise RegistryError(f"{entry.name}: version {version!r} must be 1-32 characters "
                                "of [0-9A-Za-z._-]")
    if entry.current not in entry.versions:
        raise RegistryError(f"{entry.name}: current version {entry.current!r} is not among "
                            f"{entry.versions}")
    if entry.source == "onnx" and set(entry.files) != set(entry.versions):
        raise RegistryError(
            f"{entry.name}: every version of an onnx model needs its file and sha256")
    if entry.source == "seed" and not set(entry.files) <= set(entry.versions):
        raise RegistryError(f"{entry.name}: files recorded for versions it does not list")
    return entry


class _PlainLoader(yaml.SafeLoader):
    """yaml's safe loader with the pristine constructor table: SAM CLI's yamlhelper (imported by
    the local API's template reader) makes the global SafeLoader build OrderedDicts, which
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
    return entries


def save(entries: list[ModelEntry], path: Path = REGISTRY) -> None:
    """Rewrite the entries of models.yaml, keeping its header comment."""
    header = "".join(line for line in path.read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    items = []
    for entry in entries:
        item = {k: v for k, v in asdict(check(entry)).items() if v not in (None, {}, [])}
        items.append(item)
    path.write_text(header + yaml.safe_dump({"models": items}, sort_keys=False,
                                            default_flow_style=None))
