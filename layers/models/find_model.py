"""Find the exported model a model layer is built from, and refuse one that fails its sha256.

`sam build` names a model layer `<CamelName>ModelLayer`; this maps the CamelName back to the
kebab-case folder under build/models/ and checks every version's model file against its
manifest before the layer is built. Standard library only: it runs inside `sam build`.
"""

import hashlib
import json
import sys
from pathlib import Path


def camel_name(model_name: str) -> str:
    """breast-cancer-mlp -> BreastCancerMlp: the form a model takes in template logical IDs."""
    return "".join(part[:1].upper() + part[1:] for part in model_name.split("-"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(models_dir: Path, wanted: str) -> str:
    matches = [d for d in sorted(models_dir.glob("*/")) if camel_name(d.name) == wanted]
    if not matches:
        sys.exit(
            f"no exported model under {models_dir} for layer {wanted}ModelLayer: run `make models`"
        )
    model_dir = matches[0]
    versions = sorted(model_dir.glob("*/manifest.json"))
    if not versions:
        sys.exit(f"{model_dir} has no <version>/manifest.json: run `make models`")
    for manifest_path in versions:
        manifest = json.loads(manifest_path.read_text())
        model_file = manifest_path.parent / manifest["model_file"]
        if sha256_of(model_file) != manifest["sha256"]:
            sys.exit(
                f"{model_file}: sha256 does not match {manifest_path}; refusing to build the layer"
            )
    return model_dir.name


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2]))
