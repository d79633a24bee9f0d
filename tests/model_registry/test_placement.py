"""Where a model lives, by size (model_registry.placement), and the build's size check
(model_registry.built): the arithmetic, the refusals with their reasons, the function over
Lambda's 250 MB named before a deploy, a store-backed layer without its model file."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from model_export.large import DATA_FILE, embedding
from model_registry import built, placement, registry
from model_registry.add import AddError, add, reimport
from model_registry.placement import (
    LAYER,
    LAYER_BUDGET_BYTES,
    MAX_MEMORY_MB,
    STORE,
    PlacementError,
    memory_mb,
    place,
)
from model_registry.registry import Project
from model_registry.sizing import Sizing
from tests.conftest import ROOT
from tests.model_registry.conftest import snapshot

MB = 1_000_000


def test_a_model_goes_to_its_layer_while_it_fits_and_to_the_store_beyond() -> None:
    assert 150 * MB < LAYER_BUDGET_BYTES < 160 * MB  # 262 MB less 97.5 MB of runtime, ...
    small = place(10 * MB)
    assert (small.home, small.memory_mb) == (LAYER, 1024) and "in its layer" in small.reason
    assert place(100 * MB, layer_sizes=[100 * MB]).home == STORE  # with its other version
    big = place(400 * MB)
    assert big.home == STORE and "over what a layer holds" in big.reason
    # 160 MB of runtime + (400 MB of weights + 400 MB more while it loads) x 1.1 = 1,040 MB
    assert big.memory_mb == 1088 and "1,088 MB of memory" in big.reason
    assert place(10 * MB, wanted=STORE).home == STORE


def test_a_store_versions_function_is_sized_from_its_measured_peak() -> None:
    # A 400 MB version whose measuring process peaked at 410 MB loading it and 1,000 MB with the
    # sizing request: 160 MB of runtime + 1,000 MB x 1.25 = 1,410 MB, rounded up to 1,472
    peak = Sizing(410 * MB, 1_000 * MB, {"input_ids": [8, 512]}, given=False)
    measured = place(400 * MB, sizing=peak)
    assert measured.memory_mb == 1_472 == memory_mb([400 * MB], [peak])
    assert ("its function gets 1,472 MB of memory: 160 MB of runtime + (load peak 410 MB + a "
            "request of shape input_ids 8x512 (the default: 8 rows on the batch axis, 512 on "
            "every other variable axis) 590 MB) x 1.25") in measured.reason
    # beside an unmeasured 400 MB version: its weights (x 1.1) are held too
    assert memory_mb([400 * MB, 400 * MB], [None, peak]) == 64 * -(-(160 + 440 + 1_250) // 64)
    # unmeasured, the formula from the size alone
    assert memory_mb([400 * MB], [None]) == memory_mb([400 * MB]) == 1088
    # and a peak no function can hold is refused with the arithmetic
    huge = Sizing(4_000 * MB, 9_000 * MB, {"input_ids": [8, 512]}, given=True)
    with pytest.raises(PlacementError, match=r"11,410 MB: 160 MB of runtime \+ 11,250 MB at the "
                                             r"peak of its largest version: \(load peak 4,000 "
                                             r"MB .*sizing rows given\) 5,000 MB\) x 1.25; "
                                             r"Lambda's maximum is 10,240 MB"):
        place(4_000 * MB, external=True, sizing=huge)


def test_what_no_function_can_hold_is_refused_with_the_arithmetic() -> None:
    with pytest.raises(PlacementError, match="does not fit a layer"):
        place(200 * MB, wanted=LAYER)
    with pytest.raises(PlacementError, match="over the 2 GiB of a single-file ONNX model"):
        place(3_000 * MB)
    assert place(4_500 * MB, external=True).memory_mb == 10_112  # 160 + 4,500 x 2 x 1.1
    with pytest.raises(PlacementError, match="10,240 MB"):
        place(4_600 * MB, external=True)
    # the largest single file fits one function alone, not beside two more versions of it
    assert memory_mb([2_147 * MB]) <= MAX_MEMORY_MB
    with pytest.raises(PlacementError, match=r"10,240 MB.*fewer versions"):
        place(2_000 * MB, store_sizes=[2_000 * MB, 2_000 * MB, 2_000 * MB])


def test_a_refused_add_says_why_and_leaves_every_file_as_it_was(
        tmp_path: Path, project: Project) -> None:
    before = snapshot(project)
    too_big = tmp_path / "big.onnx"
    with too_big.open("wb") as handle:  # refused on its size, before it is parsed
        handle.truncate(LAYER_BUDGET_BYTES + 1)
    with pytest.raises(AddError, match="no Lambda function can hold big version 1: it does "
                                       "not fit a layer"):
        add("big", too_big, project=project, place=LAYER)
    assert snapshot(project) == before


def test_a_stored_version_is_exported_again_from_model_store_as_stored(
        tmp_path: Path, project: Project) -> None:
    # Given a small model forced into the store (PLACE=store) and in the external-data format
    source = embedding(1, tmp_path / "made", external=True)
    placed: list[placement.Placement] = []
    add("tiny-stored", source, project=project, place=STORE, placed=placed)
    assert placed[0].home == STORE and "external-data format" in placed[0].reason
    entry = next(e for e in registry.load(project.registry) if e.name == "tiny-stored")
    record = entry.files["1"]
    assert (record["home"], record["data"]) == (STORE, "model_store/tiny-stored/1/" + DATA_FILE)
    # When a fresh clone exports it again from model_store/ (make models)
    shutil.rmtree(project.models_dir / "tiny-stored")
    assert reimport(entry, project.models_dir, project.root) == ["1"]
    # Then its manifest names both stored objects, and its files are beside it
    manifest = json.loads((project.models_dir / "tiny-stored" / "1" / "manifest.json").read_text())
    assert manifest["store"]["key"] == "models/tiny-stored/1/model.onnx"
    assert manifest["store"]["data"]["location"] == DATA_FILE
    assert (project.models_dir / "tiny-stored" / "1" / DATA_FILE).read_bytes() == \
        source.with_name(DATA_FILE).read_bytes()
    with pytest.raises(AddError, match="served from the store"):
        add("tiny-layer", source, project=project, place=LAYER)


def built_tree(root: Path, layer_bytes: int) -> Path:
    """A built template (as sam build leaves it) with one model function in a nested stack
    whose model layer holds `layer_bytes` (a sparse file: no disk used)."""
    group = root / "ModelsGroup0"
    for folder in ("ModelsGroup0/BigFunction", "ModelsGroup0/RuntimeLayer/python",
                   "ModelsGroup0/BigModelLayer/models"):
        (root / folder).mkdir(parents=True)
    (group / "BigFunction" / "app.py").write_text("x = 1\n")
    with (group / "BigModelLayer" / "models" / "model.onnx").open("wb") as handle:
        handle.truncate(layer_bytes)
    (group / "template.yaml").write_text(json.dumps({"Resources": {
        "RuntimeLayer": {"Type": "AWS::Serverless::LayerVersion",
                         "Properties": {"ContentUri": "RuntimeLayer"}},
        "BigModelLayer": {"Type": "AWS::Serverless::LayerVersion",
                          "Properties": {"ContentUri": "BigModelLayer"}},
        "BigFunction": {"Type": "AWS::Serverless::Function", "Properties": {
            "CodeUri": "BigFunction",
            "Layers": [{"Ref": "RuntimeLayer"}, {"Ref": "BigModelLayer"}]}}}}))
    template = root / "template.yaml"
    template.write_text(json.dumps({"Resources": {"ModelsGroup0": {
        "Type": "AWS::Serverless::Application",
        "Properties": {"Location": "ModelsGroup0/template.yaml"}}}}))
    return template


def test_the_build_fails_naming_a_function_over_250_mb(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fits = built_tree(tmp_path / "fits", placement.UNZIPPED_LIMIT_BYTES - 100)
    assert built.check_built(fits) == [] and built.main(["--built", str(fits)]) == 0
    over = built_tree(tmp_path / "over", placement.UNZIPPED_LIMIT_BYTES)
    (problem,) = built.check_built(over)
    assert problem.startswith("ModelsGroup0/BigFunction: its code and layers are 262,144,006 ")
    assert built.main(["--built", str(over)]) == 1
    assert "Unzipped size must be smaller than 262144000 bytes" in capsys.readouterr().err


def test_a_store_backed_versions_layer_leaves_its_model_file_out(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("find_model",
                                                  ROOT / "layers" / "models" / "find_model.py")
    assert spec and spec.loader
    find_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(find_model)
    model = tmp_path / "models" / "big"
    for version, stored in (("1", False), ("2", True)):
        (model / version).mkdir(parents=True)
        (model / version / "model.onnx").write_bytes(b"onnx")
        (model / version / "examples.json").write_text("{}")
        (model / version / "manifest.json").write_text(json.dumps(
            {"model_file": "model.onnx",
             **({"store": {"key": "models/big/2/model.onnx", "bytes": 4}} if stored else {})}))
    assert find_model.copy_to(model, tmp_path / "layer") == ["2"]
    kept = sorted(str(p.relative_to(tmp_path / "layer")) for p in (tmp_path / "layer").rglob("*.*"))
    assert kept == ["big/1/examples.json", "big/1/manifest.json", "big/1/model.onnx",
                    "big/2/examples.json", "big/2/manifest.json"]
