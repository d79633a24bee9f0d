"""The deployment's model catalog: every model, its versions and its group, and the name of the
Lambda function that serves it.

A deployment of hundreds of models cannot list them in an environment variable (Lambda allows
4 KB for all of a function's variables) or a parameter (4,096 bytes), so the functions that need
every model (the server function's repository index, readiness and model routes; the batch
trigger and jobs functions) read a catalog file instead: `models.json` in the catalog layer,
mounted at /opt/catalog (`MODEL_CATALOG`), built by `sam build` from models.yaml
(`python -m model_registry.catalog`). Its shape:

    {"models": [{"name": "breast-cancer-mlp", "versions": ["1"], "current": "1", "group": 0},
                {"name": "text-topics", "versions": ["1"], "current": "1", "group": 0,
                 "jsonl_only": {"1": "<why a .npy job cannot serve it: npy_refusal>"}}]}

Each model function is named `<MODEL_FUNCTION_PREFIX><model>`: the template gives every model
function and the server function the same prefix (the root stack's ModelFunctionPrefix, at most
15 characters, so model names have 49 of Lambda's 64: model_api.names), so the server finds a
function from the model's name alone, and its one IAM statement allows invoking
`<prefix>*:live`, however many models there are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from model_api.errors import echoed
from model_api.server import CATALOG_ENV

if TYPE_CHECKING:  # (no import at run time: the server function reads the catalog, not numpy)
    from model_api.manifest import Manifest

PREFIX_ENV = "MODEL_FUNCTION_PREFIX"
DEFAULT_CATALOG = "/opt/catalog/models.json"
# An error about an unknown model names the models when there are at most this many.
LISTED_NAMES = 10


class CatalogError(ValueError):
    """The catalog file is missing or not the shape above; the message says which."""


def npy_refusal(manifest: Manifest) -> str | None:
    """Why a `.npy` batch job cannot serve this model version, else None: a .npy input is one
    tensor of numbers and its outputs are .npy files of numbers (batch/README.md), so the model
    needs one input and no BYTES (text) input or output. The jobs API refuses such a job when
    it is created (from the catalog's `jsonl_only`); the runner, on the file's header."""
    if len(manifest.inputs) != 1:
        return (f"model {manifest.name} has {len(manifest.inputs)} inputs; .npy input fits "
                "only single-input models (use JSON Lines)")
    texts = [f"{kind} {tensor.name!r}" for kind, tensors in (("input", manifest.inputs),
                                                               ("output", manifest.outputs))
             for tensor in tensors if tensor.datatype == "BYTES"]  # datatypes.BYTES: that
    # module brings numpy, which the server function, a reader of the catalog, does without
    if texts:
        return (f"model {manifest.name} has BYTES (text) {', '.join(texts)}; a .npy job's "
                "input and outputs hold numbers only: send the rows as JSON Lines, whose "
                "records carry every output")
    return None


@dataclass(frozen=True)
class CatalogModel:
    """One model of the deployment: its versions (as listed), the current one, its group
    (the nested stack and REST API serving it), and the versions that take JSON Lines jobs
    only, each with the reason (npy_refusal; those whose manifest was not at hand when the
    catalog was written are not listed: their runner says it)."""

    name: str
    versions: tuple[str, ...]
    current: str
    group: int
    jsonl_only: tuple[tuple[str, str], ...] = ()

    def npy_refusal(self, version: str) -> str | None:
        """Why a .npy job of `version` cannot run, or None."""
        return dict(self.jsonl_only).get(version)

    def job_refusal(self, format_: str, version: str | None) -> str | None:
        """Why a batch job of `format_` ("jsonl" or "npy") of `version` (None: the current
        one) cannot run, or None: the rule the jobs API applies when a job is created and the
        trigger when an input is uploaded."""
        return self.npy_refusal(version or self.current) if format_ == "npy" else None


@dataclass(frozen=True)
class Catalog:
    """Every model of the deployment (in registry order) and its functions' name prefix."""

    models: tuple[CatalogModel, ...]
    function_prefix: str = ""

    def names(self) -> frozenset[str]:
        return frozenset(model.name for model in self.models)

    def unknown(self, name: str) -> str:
        """Why `name` is not a model here, for an error message: the models, when a few; else
        where to find them."""
        names = sorted(self.names())
        listed = (", ".join(names) if len(names) <= LISTED_NAMES else
                  f"{len(names)} models, listed by POST /v2/repository/index")
        return f"unknown model {echoed(name)}; this deployment serves {listed or 'no model'}"

    @cached_property
    def _by_name(self) -> dict[str, CatalogModel]:
        return {model.name: model for model in self.models}

    def find(self, name: str) -> CatalogModel | None:
        """The model called `name`, None when the deployment has none (a dict lookup: the
        router asks on every request)."""
        return self._by_name.get(name)

    def function_name(self, name: str) -> str:
        """The Lambda function serving model `name`: `<prefix><name>`."""
        return self.function_prefix + name

    @classmethod
    def parse(cls, text: str, function_prefix: str = "") -> Catalog:
        """A catalog from its JSON text; CatalogError when it is not the documented shape."""
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise CatalogError(f"the model catalog is not JSON: {exc}") from exc
        items = document.get("models") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise CatalogError('the model catalog must be {"models": [...]}')
        models = []
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("versions"), list)
                    and all(isinstance(v, str) for v in item["versions"])
                    and isinstance(item.get("current"), str)
                    and isinstance(item.get("group"), int)):
                raise CatalogError(f"model catalog entry {item!r}: needs name, versions, "
                                   "current and group")
            only = item.get("jsonl_only", {})
            if not (isinstance(only, dict) and all(isinstance(v, str) for v in only.values())):
                raise CatalogError(f"model catalog entry {item['name']!r}: jsonl_only must map "
                                   "versions to reasons")
            models.append(CatalogModel(item["name"], tuple(item["versions"]), item["current"],
                                       item["group"], tuple(only.items())))
        return cls(tuple(models), function_prefix)

    @classmethod
    def load(cls, path: Path, function_prefix: str = "") -> Catalog:
        """The catalog file at `path`; CatalogError if it cannot be read or parsed."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise CatalogError(f"the model catalog {path} cannot be read: {exc}") from exc
        return cls.parse(text, function_prefix)

    @classmethod
    def required(cls, environ: Mapping[str, str]) -> Catalog:
        """The catalog of a function that cannot run without one (batch trigger and jobs);
        CatalogError when MODEL_CATALOG is not set."""
        found = cls.from_environment(environ)
        if found is None:
            raise CatalogError(f"{CATALOG_ENV} must name the model catalog file "
                               f"({DEFAULT_CATALOG} in the catalog layer)")
        return found

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Catalog | None:
        """The catalog `MODEL_CATALOG` names, with `MODEL_FUNCTION_PREFIX`; None when the
        function has no catalog (a model function)."""
        path = environ.get(CATALOG_ENV)
        if not path:
            return None
        return cls.load(Path(path), environ.get(PREFIX_ENV, ""))

    def document(self) -> dict[str, list[dict[str, object]]]:
        """The JSON document of this catalog (the file's shape)."""
        return {"models": [{"name": m.name, "versions": list(m.versions), "current": m.current,
                            "group": m.group,
                            **({"jsonl_only": dict(m.jsonl_only)} if m.jsonl_only else {})}
                           for m in self.models]}
