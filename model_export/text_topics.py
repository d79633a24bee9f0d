"""text-topics: TF-IDF + multinomial naive Bayes over short texts, topic names as labels.

Tokenising, lower-casing and TF-IDF weighting run inside the ONNX graph, so clients send raw
strings. The vectorizer is converted with the "C.UTF-8" locale: onnxruntime's StringNormalizer
otherwise asks for en_US.UTF-8, which neither this machine nor Lambda is sure to have. Its
Tokenizer finds the words scikit-learn finds, in any script (model_export.text.word_tokens:
skl2onnx's default is ASCII only); the parity check adds texts beyond ASCII
(model_export.text.UNICODE_TEXTS) to the held-back rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import make_pipeline

from model_export.check import Tolerance
from model_export.export import Split, Splits, Trained
from model_export.text import word_tokens
from model_export.versions import SKLEARN_FRAMEWORKS, TARGET_OPSET

SEED = 0
CORPUS = Path(__file__).resolve().parent / "data" / "text_topics.jsonl"


def load_corpus(path: Path = CORPUS) -> tuple[np.ndarray, np.ndarray]:
    """Texts and topics as object arrays of str (what onnxruntime takes for BYTES)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return (np.array([row["text"] for row in rows], dtype=object),
            np.array([row["topic"] for row in rows], dtype=object))


def splits() -> Splits:
    """The corpus's texts and topics (object arrays of str); 25 % held back, stratified."""
    texts, topics = load_corpus()
    x_train, x_test, y_train, y_test = train_test_split(
        texts, topics, test_size=0.25, random_state=SEED, stratify=topics)
    return Splits(Split(x_train, y_train), Split(x_test, y_test), Split(texts, topics))


def train() -> Trained:
    rows = splits()
    # Not sublinear_tf: skl2onnx 1.20 converts it inexactly (probabilities off by ~0.02).
    # English stop words carry no topic; on 240 training texts they only add noise.
    vectorizer = TfidfVectorizer(stop_words="english")
    pipeline = make_pipeline(vectorizer, MultinomialNB())
    pipeline.fit(rows.train.x, rows.train.y)
    labels = [str(topic) for topic in pipeline.classes_]
    model = convert_sklearn(
        pipeline, name="text-topics",
        initial_types=[("text", StringTensorType([None]))],
        final_types=[("label", StringTensorType([None])),
                     ("probabilities", FloatTensorType([None, len(labels)]))],
        options={id(vectorizer): {"locale": "C.UTF-8", "tokenexp": word_tokens()},
                 id(pipeline): {"zipmap": False}},
        target_opset=TARGET_OPSET)
    return Trained(
        model=model,
        inputs=[{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        outputs=[{"name": "label", "datatype": "BYTES", "shape": [-1]},
                 {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(labels)]}],
        task="classification",
        labels=labels,
        test=rows.test,
        train=rows.train,
        full=rows.full,
        framework={"label": pipeline.predict(rows.test.x),
                   "probabilities": pipeline.predict_proba(rows.test.x).astype(np.float32)},
        predict=lambda texts: {"label": pipeline.predict(texts),
                               "probabilities": pipeline.predict_proba(texts).astype(np.float32)},
        tolerances={"label": Tolerance("exact"), "probabilities": Tolerance("abs", 1e-5)},
        description="Topic of a short text (sport, cooking, technology or weather): TF-IDF "
                    "and multinomial naive Bayes, tokenising inside the graph; send raw "
                    "strings. `label` is the topic name; probabilities follow `labels`.",
        dataset="model_export/data/text_topics.jsonl (written for this project, Apache-2.0)",
        seed=SEED,
        frameworks=SKLEARN_FRAMEWORKS,
        ignored_words=frozenset(vectorizer.get_stop_words() or ()),
    )
