"""`python -m batch.sample`: a batch input of the model's real dataset rows, cycled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from batch import runner, sample
from tests.conftest import MODELS_DIR

MODEL = "breast-cancer-mlp"


def test_jsonl_is_one_request_per_dataset_row_cycled_with_line_ids(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    assert sample.main(["--model", MODEL, "--rows", "600", "--out", str(out),
                        "--models-dir", str(MODELS_DIR)]) == 0
    dataset = load_breast_cancer().data
    requests = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in requests] == [str(n) for n in range(600)]
    for n in (0, 568, 569, 599):  # 569 rows in the dataset: line 569 is row 0 again
        [tensor] = requests[n]["inputs"]
        assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("features", [1, 30],
                                                                         "FP32")
        assert tensor["data"] == dataset[n % 569].tolist()


def test_npy_is_the_model_input_rows_in_its_dtype(tmp_path: Path) -> None:
    out = tmp_path / "rows.npy"
    assert sample.main(["--model", MODEL, "--rows", "1000", "--out", str(out),
                        "--models-dir", str(MODELS_DIR)]) == 0
    rows = np.load(out)
    assert rows.shape == (1000, 30) and rows.dtype == np.float32
    dataset = load_breast_cancer().data.astype(np.float32)
    np.testing.assert_array_equal(rows[:569], dataset)
    np.testing.assert_array_equal(rows[569:], dataset[:431])


def exported(models_dir: Path, version: str, datatype: str, current: str | None = None
             ) -> list[str]:
    """A copy of the model's manifest (all that sample reads) as `version`, input `datatype`,
    and a registry naming `current` (default: this version) current; sample's arguments."""
    manifest = json.loads((MODELS_DIR / MODEL / "1" / "manifest.json").read_text())
    manifest["inputs"][0]["datatype"] = datatype
    folder = models_dir / MODEL / version
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
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
    np.testing.assert_array_equal(rows, load_breast_cancer().data[:10].astype(np.int32))
    registry = Path(arguments[-1])
    assert runner.version_dir(models, MODEL, None, registry).name == "10"
    assert runner.version_dir(models, MODEL, "9", registry).name == "9"
    with pytest.raises(runner.PermanentError, match="has no version '8'; versions: '9', '10'"):
        runner.version_dir(models, MODEL, "8", registry)


def test_npy_of_a_bytes_input_is_refused_saying_to_use_json_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = exported(tmp_path / "models", "1", "BYTES")
    with pytest.raises(SystemExit):
        sample.main(["--model", MODEL, "--rows", "10", "--out", str(tmp_path / "rows.npy"),
                     *arguments])
    assert "is BYTES" in capsys.readouterr().err and not (tmp_path / "rows.npy").exists()
