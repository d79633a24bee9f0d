"""Find the exported model a model layer is built from, and refuse one that fails its sha256;
with --copy-to, copy it into the layer, leaving out the model file of each version served from
the model store (its manifest's `store` field: model_registry.placement), so a large model's
layer holds only its manifests, examples and explainer files.

`sam build` names a model layer `<CamelName>ModelLayer`; this maps the CamelName back to the
kebab-case folder under build/models/ and checks every version's model file against its
manifest before the layer is built. It runs inside `sam build` with any python3: standard
library only, and the serving library's standard-library modules from its source folder.
"""

import json
import shutil
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


def copy_to(model_dir: Path, target: Path) -> list[str]:
    """Copy `model_dir` to `target`/<name>, without the model files kept in the model store;
    the versions left out."""
    stored: dict[str, set[str]] = {}
    for manifest_path in sorted(model_dir.glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("store"):
            data = manifest["store"].get("data") or {}
            stored[manifest_path.parent.name] = {manifest["model_file"],
                                                 *([data["location"]] if data else [])}

    def ignore(folder: str, names: list[str]) -> list[str]:
        version = Path(folder).name
        if Path(folder).parent != model_dir or version not in stored:
            return []
        return [name for name in names if name in stored[version]]

    shutil.rmtree(target / model_dir.name, ignore_errors=True)  # sam build reuses the folder
    shutil.copytree(model_dir, target / model_dir.name, ignore=ignore)
    return sorted(stored)


if __name__ == "__main__":
    name = main(Path(sys.argv[1]), sys.argv[2])
    if len(sys.argv) > 4 and sys.argv[3] == "--copy-to":
        left_out = copy_to(Path(sys.argv[1]) / name, Path(sys.argv[4]))
        if left_out:
            print(f"model layer {sys.argv[2]}: versions {', '.join(left_out)} of {name} are "
                  "served from the model store: their model files are left out",
                  file=sys.stderr)
    print(name)
