"""The seed models model_export/ trains: one recipe per (name, version) of models.yaml."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from model_export import breast_cancer, diabetes, digits, text_topics
from model_export.export import Splits, Trained

# Every recipe's export also depends on these files (the shared export path).
SHARED_SOURCES = ("__init__.py", "artifact.py", "check.py", "explanation.py", "export.py",
                  "versions.py", "requirements.txt")


@dataclass(frozen=True)
class Recipe:
    train: Callable[[], Trained]
    sources: tuple[str, ...]  # files of model_export/ the model depends on, besides the shared
    splits: Callable[[], Splits]  # its dataset's rows, split as `train` splits them


RECIPES: dict[tuple[str, str], Recipe] = {
    ("breast-cancer-mlp", "1"): Recipe(breast_cancer.train, ("breast_cancer.py",),
                                       breast_cancer.splits),
    ("diabetes-linear", "1"): Recipe(diabetes.train, ("diabetes.py",), diabetes.splits),
    ("text-topics", "1"): Recipe(text_topics.train,
                                 ("text_topics.py", "text.py", "data/text_topics.jsonl"),
                                 text_topics.splits),
    ("digits-cnn", "1"): Recipe(digits.train,
                                ("digits.py", "digits_cnn.py", "requirements-torch.txt"),
                                digits.splits),
}
