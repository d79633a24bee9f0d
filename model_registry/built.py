"""`make build` and `make validate` measure what `sam build` built: every function's code plus
its layers, unzipped, against Lambda's 250 MB (model_registry.placement holds the limit), so a
function too large fails here, naming it, before `sam deploy` could."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from model_registry.placement import MB, UNZIPPED_LIMIT_BYTES
from model_registry.template import _parse


def tree_bytes(path: Path) -> int:
    """Bytes of the files under `path`, as Lambda extracts them (symlinks followed once; a
    file hard-linked twice counts twice, as it does in a zip)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def built_functions(template: Path) -> dict[str, int]:
    """Each function of a built template (`sam build`'s .aws-sam/build/template.yaml) and its
    nested stacks: `<stack>/<FunctionId>` -> bytes of its code plus its layers, unzipped."""
    document: dict[str, Any] = _parse(template.read_text())
    resources: dict[str, Any] = document.get("Resources") or {}
    base = template.parent
    sizes: dict[str, int] = {}
    for logical_id, resource in resources.items():
        kind, props = resource.get("Type"), resource.get("Properties") or {}
        if kind == "AWS::Serverless::Application" and isinstance(props.get("Location"), str):
            nested = base / props["Location"]
            if nested.is_file():
                sizes.update({f"{logical_id}/{name}": size for name, size
                              in built_functions(nested).items()})
        if kind != "AWS::Serverless::Function" or not isinstance(props.get("CodeUri"), str):
            continue
        total = tree_bytes(base / props["CodeUri"])
        for layer in props.get("Layers") or []:
            ref = layer.get("Ref") if isinstance(layer, dict) else None
            found = resources.get(ref) if isinstance(ref, str) else None
            content = ((found or {}).get("Properties") or {}).get("ContentUri")
            if isinstance(content, str):
                total += tree_bytes(base / content)
        sizes[logical_id] = total
    return sizes


def check_built(template: Path) -> list[str]:
    """The functions of a built template over Lambda's 250 MB unzipped, each in a sentence."""
    return [f"{name}: its code and layers are {size:,} bytes unzipped, over Lambda's "
            f"{UNZIPPED_LIMIT_BYTES:,} (250 MB); `sam deploy` would fail with \"Unzipped size "
            "must be smaller than 262144000 bytes\". Move its model to the model store: "
            "make remove-model, then make add-model ... PLACE=store"
            for name, size in sorted(built_functions(template).items())
            if size > UNZIPPED_LIMIT_BYTES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--built", type=Path, default=Path(".aws-sam/build/template.yaml"),
                        help="the built template whose functions are measured")
    args = parser.parse_args(argv)
    if not args.built.is_file():
        print(f"{args.built} does not exist: run `make build` first", file=sys.stderr)
        return 2
    over = check_built(args.built)
    for line in over:
        print(f"error: {line}", file=sys.stderr)
    if not over:
        largest = max(built_functions(args.built).items(), key=lambda item: item[1])
        print(f"every function fits Lambda's 250 MB unzipped (largest: {largest[0]}, "
              f"{largest[1] / MB:,.1f} MB)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
