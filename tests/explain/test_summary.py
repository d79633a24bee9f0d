"""The explanation in words (`parameters.summary`): one sentence per row, naming what pushed the
prediction most by the model's feature names, tokens or pixels, on the real exported models."""

from __future__ import annotations

import re

import numpy as np
import pytest
from model_api.explainers import Explanation, Options
from model_api.model import LoadedModel

from tests.conftest import MODELS_DIR
from tests.datasets import held_back
from tests.unit.tiny_models import manifest_of

SEEDS = ("breast-cancer-mlp", "diabetes-linear", "digits-cnn", "text-topics")


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    return {name: LoadedModel.load(MODELS_DIR / name / "1") for name in SEEDS}


def explained(model: LoadedModel, rows: int = 3) -> tuple[np.ndarray, list[str]]:
    """Held-back rows of the model and the summary's sentences for them."""
    x = held_back(model.manifest.name)[0][:rows]
    name = model.manifest.inputs[0].name
    explanation = model.explainer.explain(model.scores(model.explainer.output), {name: x},
                                          Options())
    summary = explanation.parameters()["summary"]
    assert summary == "\n".join(explanation.summary())
    return x, summary.split("\n")


@pytest.mark.parametrize("name", SEEDS)
def test_one_plain_sentence_per_row(models: dict[str, LoadedModel], name: str) -> None:
    x, sentences = explained(models[name], 4)
    assert len(sentences) == len(x)
    for sentence in sentences:
        assert sentence.startswith("Predicted ") and sentence.endswith(".")
        assert sentence.count(".") <= 3 and "\n" not in sentence


def test_a_classifier_names_the_class_its_probability_and_its_top_features(
        models: dict[str, LoadedModel]) -> None:
    model = models["breast-cancer-mlp"]
    x = held_back("breast-cancer-mlp")[0][:3]
    explanation = model.explainer.explain(model.scores(model.explainer.output),
                                          {"features": x}, Options())
    names = model.manifest.extra["feature_names"]["features"]
    probabilities = model.scores("probabilities")({"features": x})
    for row, sentence in enumerate(explanation.summary()):
        target = int(explanation.target[row])
        label, other = model.manifest.labels[target], model.manifest.labels[1 - target]
        assert sentence.startswith(f"Predicted {label} ({probabilities[row, target]:.2f}), "
                                   "mostly because of ")
        values = explanation.attributions["features"][row]
        top = names[int(np.argmax(values))]
        assert f"because of {top}" in sentence  # the largest attribution comes first
        if values.min() < 0:
            assert sentence.endswith(f"; {names[int(np.argmin(values))]} pulled towards "
                                     f"{other}.")


def test_a_regression_says_the_value_and_what_lowered_it(models: dict[str, LoadedModel]) -> None:
    model = models["diabetes-linear"]
    names = set(model.manifest.extra["feature_names"]["features"])
    _, sentences = explained(model)
    for sentence in sentences:
        found = re.fullmatch(r"Predicted [\d.]+, mostly because of (\w+) and (\w+); (\w+) "
                             r"pulled it down\.", sentence)
        assert found is not None, sentence
        assert set(found.groups()) <= names


def test_text_and_images_are_named_by_their_tokens_and_pixels(
        models: dict[str, LoadedModel]) -> None:
    _, text = explained(models["text-topics"])
    assert all(re.search(r"because of '[^']+'", sentence) for sentence in text)
    _, images = explained(models["digits-cnn"])
    assert all(re.search(r"because of pixel \(row \d, col \d\)", sentence) for sentence in images)


def test_several_inputs_are_named_by_input_and_unnamed_columns_by_index() -> None:
    """A model of two unnamed tabular inputs, a three-class output: `input[i]` names, and
    the strongest negative pulls away from the predicted class."""
    manifest = manifest_of(("a", "FP32", (-1, 2)), ("b", "FP32", (-1, 2)),
                           outputs=(("scores", "FP32", (-1, 3)),))
    explanation = Explanation(
        "kernel_shap", "scores", {"a": np.array([[0.5, -0.1]]), "b": np.array([[0.0, -0.3]])},
        np.array([0.1]), np.array([2]), np.array([[0.1, 0.2, 0.7]]), manifest)
    assert explanation.summary() == [
        "Predicted class 2 (0.70), mostly because of a[0]; b[1] pulled away from class 2."]


def test_a_target_other_than_the_prediction_says_so(models: dict[str, LoadedModel]) -> None:
    """parameters.target names the class explained: the sentence must not call it predicted."""
    model = models["breast-cancer-mlp"]
    x = held_back("breast-cancer-mlp")[0][:4]
    predicted = model.scores("probabilities")({"features": x}).argmax(axis=1)
    for row, sentence in enumerate(model.explainer.explain(
            model.scores(model.explainer.output), {"features": x}, Options(target=1)).summary()):
        labels = model.manifest.labels
        if predicted[row] == 1:
            assert sentence.startswith(f"Predicted {labels[1]} (")
        else:
            assert sentence.startswith(f"Explaining {labels[1]} (")
            assert f"; predicted {labels[0]})" in sentence
