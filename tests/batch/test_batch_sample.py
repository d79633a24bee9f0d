"""`python -m local_api.batch.sample`: a batch input of the model's example rows (real rows),
cycled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from batch import failures, loading
from local_api.batch import sample
from tests.conftest import MODELS_DIR

MODEL = "breast-cancer-mlp"


def example_rows() -> np.ndarray:
    """The model's example rows (model_api.examples): real held-back rows of its dataset."""
    document = json.loads((MODELS_DIR / MODEL / "1" / "examples.json").read_text())
    return np.array(document["inputs"]["features"], dtype=np.float32)


def test_jsonl_is_one_request_per_example_row_cycled_with_line_ids(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    assert sample.main(["--model", MODEL, "--rows", "20", "--out", str(out),
                        "--models-dir", str(MODELS_DIR)]) == 0
    rows = example_rows()
    dataset = load_breast_cancer().data.astype(np.float32)
    requests = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in requests] == [str(n) for n in range(20)]
    for n in (0, len(rows) - 1, len(rows), 19):  # the examples cycle
        [tensor] = requests[n]["inputs"]
        assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("features", [1, 30],
                                                                         "FP32")
        row = np.array(tensor["data"], dtype=np.float32).ravel()
        np.testing.assert_array_equal(row, rows[n % len(rows)])
        assert (dataset == row).all(axis=1).any()  # a real row of the dataset


def test_npy_is_the_model_input_rows_in_its_dtype(tmp_path: Path) -> None:
    out = tmp_path / "rows.npy"
    assert sample.main(["--model", MODEL, "--rows", "1000", "--out", str(out),
                        "--models-dir", str(MODELS_DIR)]) == 0
    rows = np.load(out)
    assert rows.shape == (1000, 30) and rows.dtype == np.float32
    examples = example_rows()
    np.testing.assert_array_equal(rows, examples[np.arange(1000) % len(examples)])


def exported(models_dir: Path, version: str, datatype: str, current: str | None = None
             ) -> list[str]:
    """A copy of the model's manifest (all that sample reads) as `version`, input `datatype`,
    and a registry naming `current` (default: this version) current; sample's arguments."""
    manifest = json.loads((MODELS_DIR / MODEL / "1" / "manifest.json").read_text())
    manifest["inputs"][0]["datatype"] = datatype
    folder = models_dir / MODEL / version
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if datatype != "BYTES":
        shutil.copy(MODELS_DIR / MODEL / "1" / "examples.json", folder / "examples.json")
    versions = sorted(p.name for p in (models_dir / MODEL).iterdir())
    registry = models_dir.parent / "models.yaml"
    registry.write_text(json.dumps({"models": [{"name": MODEL, "source": "seed",
                                                "versions": versions,
                                                "current": current or version}]}))
    return ["--models-dir", str(models_dir), "--registry", str(registry)]


def test_npy_takes_the_current_version_and_any_numeric_datatype(tmp_path: Path) -> None:
    models = tmp_path / "models"
    exported(models, "10", "INT32")
    arguments = exported(models, "9", "FP64", current="10")  # not the last by any order
    out = tmp_path / "rows.npy"
    assert sample.main(["--model", MODEL, "--rows", "10", "--out", str(out), *arguments]) == 0
    rows = np.load(out)
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(rows, example_rows()[np.arange(10) % 8].astype(np.int32))
    registry = Path(arguments[-1])
    assert loading.version_dir(models, MODEL, None, registry).name == "10"
    assert loading.version_dir(models, MODEL, "9", registry).name == "9"
    with pytest.raises(failures.PermanentError, match="has no version '8'; versions: '9', '10'"):
        loading.version_dir(models, MODEL, "8", registry)


def test_npy_of_a_bytes_input_is_refused_saying_to_use_json_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = exported(tmp_path / "models", "1", "BYTES")
    with pytest.raises(SystemExit):
        sample.main(["--model", MODEL, "--rows", "10", "--out", str(tmp_path / "rows.npy"),
                     *arguments])
    said = capsys.readouterr().err
    assert "has BYTES (text) input" in said and "as JSON Lines" in said
    assert not (tmp_path / "rows.npy").exists()
