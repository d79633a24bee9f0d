"""`python -m batch.sample`: a batch input of the model's real dataset rows, cycled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from batch import sample
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
