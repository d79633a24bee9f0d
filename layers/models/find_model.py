"""Find the exported model a model layer is built from, and refuse one that fails its sha256.

`sam build` names a model layer `<CamelName>ModelLayer`; this maps the CamelName back to the
kebab-case folder under build/models/ and checks every version's model file against its
manifest before the layer is built. It runs inside `sam build` with any python3: standard
library only, and the serving library's standard-library modules from its source folder.
"""

import json
import sys
from pathlib import Path

# The serving library's source (the ServingLayer's python/ folder), as Lambda's /opt/python.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "serving" / "python"))
from model_api.integrity import file_sha256
from model_api.names import camel_name


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
        if file_sha256(model_file) != manifest["sha256"]:
            sys.exit(
                f"{model_file}: sha256 does not match {manifest_path}; refusing to build the layer"
            )
    return model_dir.name


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2]))
