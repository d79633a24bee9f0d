"""Text models tokenise in their graph as scikit-learn does, in every script (issue 25, 2).

Every Unicode code point goes through onnxruntime's Tokenizer with `word_tokens()` and through
scikit-learn's default tokenizer, and through onnxruntime's StringNormalizer and `str.lower`;
the exported text-topics answers as its pipeline does on texts beyond ASCII, and the parity
check stops an export that tokenises ASCII only.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from model_api.model import LoadedModel
from onnx import TensorProto, helper
from sklearn.feature_extraction.text import TfidfVectorizer

from model_export import text_topics
from model_export.check import ParityError, session, unicode_parity
from model_export.text import LOWERCASE_DIFFERENCES, UNICODE_TEXTS, word_tokens
from tests.conftest import MODELS_DIR

TEXT_TOPICS = MODELS_DIR / "text-topics" / "1"
CHUNK = 4096  # code points per text


def one_node(node: onnx.NodeProto) -> ort.InferenceSession:
    """A graph of `node` alone (its attributes as exported), string tensor x -> y."""
    alone = onnx.NodeProto()
    alone.CopyFrom(node)
    alone.input[:], alone.output[:] = ["x"], ["y"]
    graph = helper.make_graph([alone], "one", [helper.make_tensor_value_info(
        "x", TensorProto.STRING, [None])], [helper.make_tensor_value_info(
            "y", TensorProto.STRING, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def exported_node(op_type: str) -> onnx.NodeProto:
    (node,) = [n for n in onnx.load(TEXT_TOPICS / "model.onnx").graph.node
               if n.op_type == op_type]
    return node


def every_code_point() -> list[str]:
    return [chr(p) for p in range(sys.maxunicode + 1) if not 0xD800 <= p <= 0xDFFF]


def test_the_graph_finds_the_words_scikit_learn_finds_in_every_script() -> None:
    # Given the exported graph's Tokenizer (the pattern word_tokens() gives)
    tokenizer = exported_node("Tokenizer")
    attributes = {a.name: helper.get_attribute_value(a) for a in tokenizer.attribute}
    assert attributes["tokenexp"].decode() == word_tokens()
    run = one_node(tokenizer)
    # When every code point stands between letters ("ab" c "cd"), CHUNK of them in a text
    points = every_code_point()
    texts = [" ".join(f"ab{c}cd" for c in points[i:i + CHUNK])
             for i in range(0, len(points), CHUNK)]
    (tokens,) = run.run(None, {"x": np.array(texts, dtype=object)})
    # Then its tokens are scikit-learn's, text by text
    analyse = TfidfVectorizer(lowercase=False).build_tokenizer()
    pad = attributes["pad_value"].decode()
    for text, row in zip(texts, tokens, strict=True):
        assert [t for t in row if t != pad] == analyse(text), text[:40]


def test_lower_casing_differs_from_python_only_where_documented() -> None:
    run = one_node(exported_node("StringNormalizer"))
    points = every_code_point()
    (lowered,) = run.run(None, {"x": np.array([f"x{c}y" for c in points], dtype=object)})
    differences = {c: (f"x{c}y".lower()[1:-1], got[1:-1])
                   for c, got in zip(points, lowered, strict=True) if got != f"x{c}y".lower()}
    assert differences == LOWERCASE_DIFFERENCES


def test_text_topics_answers_as_its_pipeline_on_texts_beyond_ascii() -> None:
    # Given the pipeline trained again, and the exported version as the API loads it
    trained = text_topics.train()
    assert trained.predict is not None
    expected = trained.predict(np.array(UNICODE_TEXTS, dtype=object))
    served = LoadedModel.load(TEXT_TOPICS).run(
        {"text": np.array(UNICODE_TEXTS, dtype=object)}, ["label", "probabilities"])
    # Then the labels are the same and the probabilities equal to float32 rounding
    assert list(served["label"]) == list(expected["label"])
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-6)
    # And the manifest records that parity
    manifest = json.loads((TEXT_TOPICS / "manifest.json").read_text())
    assert manifest["parity"]["unicode_texts"]["rows"] == len(UNICODE_TEXTS)


def test_the_parity_check_stops_an_ascii_only_tokenizer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # skl2onnx's own default for (?u)\b\w\w+\b: ASCII words only
    monkeypatch.setattr(text_topics, "word_tokens", lambda: "[a-zA-Z0-9_]+")
    trained = text_topics.train()
    with pytest.raises(ParityError, match="beyond ASCII"):
        unicode_parity(session(trained.model), "text", trained.predict, trained.tolerances)
    with pytest.raises(ParityError, match="needs the framework's predict"):
        unicode_parity(session(trained.model), "text", None, trained.tolerances)
