"""Data capture (model_api/capture, model_api/aws/capture.py): settings, records, the hook on
the real pipeline and models, the S3 store on moto (erasure of every version), and the local
API capturing held-back rows that `make capture`'s code reads back."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from model_api.aws import capture as aws_capture
from model_api.capture import record
from model_api.capture import store as capture_store
from model_api.capture.config import CaptureConfigError, parse
from model_api.capture.hook import CaptureHook, Counts, HashKeyLoading
from model_api.capture.store import FolderStore
from model_api.codec import InferRequest
from model_api.limits import API_REQUEST
from model_api.model import LoadedModel
from model_api.pipeline import Pipeline
from moto import mock_aws

from model_registry.registry import (
    ModelEntry,
    RegistryError,
    check,
    check_capture_inputs,
    exported,
)
from tests.conftest import MODELS_DIR, local_api_server

SECRET_TEXT = "Zanzibar quokka marmalade whispered"
KEY = b"k" * 32


def _model(name: str) -> LoadedModel:
    return LoadedModel.load(next((MODELS_DIR / name).glob("*")))


def _body(name: str, rows: list[Any], datatype: str = "FP32") -> bytes:
    shape = [len(rows), *([len(rows[0])] if isinstance(rows[0], list) else [])]
    return json.dumps({"id": "r1", "inputs": [{"name": "features" if datatype == "FP32"
                                               else "text", "shape": shape,
                                               "datatype": datatype, "data": rows}]}).encode()


def _held_back(name: str) -> list[list[float]]:
    rows: list[list[float]] = json.loads(
        next((MODELS_DIR / name).glob("*/examples.json")).read_text())["inputs"]["features"]
    return rows


def _run(model: LoadedModel, request: InferRequest) -> dict[str, np.ndarray]:
    """The model's run on one request's inputs, every output it asks for."""
    return model.run(request.inputs, [output.name for output in request.outputs])


def _hook(store: Any, sampling: float = 100, emitted: list[Counts] | None = None,
          **settings: Any) -> CaptureHook:
    config = parse({"sampling": sampling, **settings})
    return CaptureHook(lambda _model: config, store, lambda: KEY,
                       (emitted.append if emitted is not None else lambda _: None))


def test_settings_are_checked_with_clear_errors() -> None:
    assert parse({"sampling": 20}).active
    assert not parse(None).active
    for bad, words in (({"sampling": 120}, "0 to 100"), ({"rules": {"x": "blur"}}, "blur"),
                       ({"rules": {"x": {"bucket": [3, 1]}}}, "increasing"),
                       ({"sample": 5}, "unknown field")):
        with pytest.raises(CaptureConfigError, match=words):
            parse(bad)
    with pytest.raises(RegistryError, match=r"my-model: capture\.sampling"):
        check(ModelEntry("my-model", "seed", ["1"], "1", capture={"sampling": -1}))


def test_held_back_rows_captured_and_read_back(tmp_path: Path) -> None:
    emitted: list[Counts] = []
    pipeline = Pipeline(API_REQUEST, [_hook(FolderStore(tmp_path), emitted=emitted)])
    model, rows = _model("breast-cancer-mlp"), _held_back("breast-cancer-mlp")
    answer = pipeline.handle(model, _body("breast-cancer-mlp", rows), {})
    records = list(capture_store.read(FolderStore(tmp_path), "breast-cancer-mlp"))
    assert len(records) == 1 and records[0]["rows"] == len(rows)
    assert np.allclose(records[0]["inputs"]["features"], rows, rtol=1e-6)
    # FP32 values at their own precision: 17.99, not tolist()'s 17.989999771118164
    assert records[0]["inputs"]["features"] == [[float(str(np.float32(v))) for v in row]
                                                for row in rows]
    assert records[0]["outputs"]["label"] == json.loads(answer.body)["outputs"][0]["data"]
    assert records[0]["version"] == "1" and records[0]["id"] == "r1"
    assert datetime.fromisoformat(records[0]["time"].replace("Z", "+00:00")).tzinfo
    assert emitted == [{("breast-cancer-mlp", "captured", ""): 1,
                        ("breast-cancer-mlp", "delivered", ""): 1}]


def test_what_was_not_answered_and_explanations_are_not_captured(tmp_path: Path) -> None:
    # Rows so large that the model's probabilities are NaN: the JSON answer is a 400, and
    # the record of it would put 3e38 into the window's drift; an /explain call's rows are
    # (most often) ones already predicted; a batch chunk keeps only its answered lines
    from model_api.errors import BadRequest
    from model_api.limits import BATCH_RECORD

    from batch.jsonl import line_records

    model, rows = _model("breast-cancer-mlp"), _held_back("breast-cancer-mlp")
    huge = [[3e38] * len(rows[0])]
    api = Pipeline(API_REQUEST, [_hook(FolderStore(tmp_path / "api"))])
    with pytest.raises(BadRequest, match="NaN or infinite"):
        api.handle(model, _body("breast-cancer-mlp", huge), {})
    api.handle(model, _body("breast-cancer-mlp", rows[:1]), {}, explain=True)
    assert list(capture_store.read(FolderStore(tmp_path / "api"), "breast-cancer-mlp")) == []
    api.handle(model, _body("breast-cancer-mlp", rows[:2]), {})
    (kept,) = capture_store.read(FolderStore(tmp_path / "api"), "breast-cancer-mlp")
    assert kept["rows"] == 2

    batch = Pipeline(BATCH_RECORD, [_hook(FolderStore(tmp_path / "batch"))], path="batch")
    lines = [_body("breast-cancer-mlp", rows[:1]), _body("breast-cancer-mlp", huge),
             _body("breast-cancer-mlp", rows[1:2])]
    records, errors = line_records(batch, lines, 1, model, None, lambda items: (
        (position, _run(model, request)) for position, request in items))
    batch.flush()
    assert errors == 1 and b"NaN or infinite" in records[1]
    captured = list(capture_store.read(FolderStore(tmp_path / "batch"), "breast-cancer-mlp"))
    assert [r["inputs"]["features"] for r in captured] == [
        [[float(str(np.float32(v))) for v in row]] for row in rows[:2]]


def test_rules_round_bucket_drop_and_sampling(tmp_path: Path) -> None:
    store = FolderStore(tmp_path)
    model, rows = _model("breast-cancer-mlp"), _held_back("breast-cancer-mlp")
    Pipeline(API_REQUEST, [_hook(store, rules={"features": {"round": 0}}, outputs=False)]
             ).handle(model, _body("x", rows), {})
    Pipeline(API_REQUEST, [_hook(store, rules={"features": {"bucket": [10, 100]}})]
             ).handle(model, _body("x", rows), {})
    Pipeline(API_REQUEST, [_hook(store, rules={"features": "drop"})]
             ).handle(model, _body("x", rows), {})
    Pipeline(API_REQUEST, [_hook(store, sampling=0)]).handle(model, _body("x", rows), {})
    rounded, bucketed, dropped = capture_store.read(store, "breast-cancer-mlp")
    assert rounded["inputs"]["features"][0][0] == round(rows[0][0]) and "outputs" not in rounded
    assert set(bucketed["inputs"]["features"]["bucket"][0]) <= {0, 1, 2}
    assert dropped["inputs"] == {} and dropped["outputs"]


@mock_aws
def test_a_secret_hash_key_is_fetched_off_the_request_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A deployed function reads its key from Secrets Manager: boto3's import and the call
    # (150-250 ms) run in a background thread; records that hash before it has arrived are
    # dropped and counted (hash_key_loading), never waited for, and never delay the next ones.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    boto3.client("secretsmanager").create_secret(Name="capture-key", SecretString="k" * 32)
    # The fetch waits for the gate, as a real one takes its 150-250 ms: the first record's
    # request does not wait for it (here, on moto in-process, it could otherwise win the race)
    gate, fetch = threading.Event(), aws_capture.SecretKey._fetch

    def slow_fetch(self: aws_capture.SecretKey) -> None:
        gate.wait(30)
        fetch(self)

    monkeypatch.setattr(aws_capture.SecretKey, "_fetch", slow_fetch)
    key = aws_capture.hash_key({aws_capture.KEY_SECRET_ENV: "capture-key"})
    store, emitted = FolderStore(tmp_path), []
    hook = CaptureHook(lambda _m: parse({"sampling": 100}), store, key, emitted.append)
    model = _model("text-topics")
    Pipeline(API_REQUEST, [hook]).handle(model, _body("t", [SECRET_TEXT], "BYTES"), {})
    assert emitted[-1]["text-topics", "dropped", "hash_key_loading"] == 1
    gate.set()
    deadline = time.monotonic() + 30
    while True:  # the fetch finishes in the background
        try:
            assert key() == b"k" * 32
            break
        except HashKeyLoading:
            assert time.monotonic() < deadline, "the key never arrived"
            time.sleep(0.01)
    Pipeline(API_REQUEST, [hook]).handle(model, _body("t", [SECRET_TEXT], "BYTES"), {})
    (record,) = capture_store.read(store, "text-topics")
    assert record["inputs"]["text"]["tokens"] == [4]


def test_a_secret_that_cannot_be_read_is_said_once_then_asked_again_later(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate, fetch = threading.Event(), aws_capture.SecretKey._fetch

    def gated_fetch(self: aws_capture.SecretKey) -> None:  # each fetch waits for the gate
        gate.wait(30)
        fetch(self)

    monkeypatch.setattr(aws_capture.SecretKey, "_fetch", gated_fetch)
    with mock_aws():
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        key = aws_capture.hash_key({aws_capture.KEY_SECRET_ENV: "no-such-secret"})
        with pytest.raises(HashKeyLoading):
            key()
        gate.set()
        deadline = time.monotonic() + 30
        while True:
            try:
                key()
            except HashKeyLoading:
                assert time.monotonic() < deadline
                time.sleep(0.01)
                continue
            except Exception as error:  # the fetch's own error, handed over once
                assert "ResourceNotFound" in type(error).__name__ + str(error)
                break
        gate.clear()
        with pytest.raises(HashKeyLoading):  # the next call starts a new fetch
            key()
        gate.set()


def test_text_never_stored_nor_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    store = FolderStore(tmp_path)
    hook = CaptureHook(lambda _m: parse({"sampling": 100}), store,
                       aws_capture.hash_key({"CAPTURE_DIR": str(tmp_path)}),
                       aws_capture.emit_metrics("Test"))
    model = _model("text-topics")
    for _ in range(2):
        Pipeline(API_REQUEST, [hook]).handle(model, _body("t", [SECRET_TEXT], "BYTES"), {})
    records = list(capture_store.read(store, "text-topics"))
    assert records[0]["inputs"]["text"]["length"] == [len(SECRET_TEXT)]
    assert records[0]["inputs"]["text"]["tokens"] == [4]
    # equal texts, equal keyed hashes: counted without being kept
    assert records[0]["inputs"]["text"]["hash"] == records[1]["inputs"]["text"]["hash"]
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    logged = caplog.text + "".join(capsys.readouterr())
    for word in SECRET_TEXT.split():
        assert word.encode() not in written and word.lower().encode() not in written
        assert word not in logged


def test_a_texts_out_of_vocabulary_share_leaves_the_models_stop_words_out(
        tmp_path: Path) -> None:
    """text-topics' vectorizer drops English stop words before its vocabulary ("the", "in",
    "to" are in no topic's vocabulary): counting them as out of it measured stop words.
    The export lists them (monitoring.vocabulary.ignored) and the share leaves them out."""
    model = _model("text-topics")
    known = record.vocabulary(model.manifest)
    assert known is not None and {"the", "in", "to"} <= known.ignored
    assert not known.ignored & known.words
    vocabulary = sorted(known.words)
    text = f"The {vocabulary[0]} and the {vocabulary[1]} in the zzzquokka"  # 2 known, 1 not
    store = FolderStore(tmp_path)
    hook = CaptureHook(lambda _m: parse({"sampling": 100}), store,
                       aws_capture.hash_key({"CAPTURE_DIR": str(tmp_path)}),
                       aws_capture.emit_metrics("Test"))
    Pipeline(API_REQUEST, [hook]).handle(model, _body("t", [text, "the and in"], "BYTES"), {})
    (captured,) = capture_store.read(store, "text-topics")
    assert captured["inputs"]["text"]["tokens"] == [8, 3]
    assert captured["inputs"]["text"]["oov"] == [round(1 / 3, 4), None]  # none looked up
    # a model whose export lists no ignored words counts every token, as before
    plain = record.Vocabulary(known.words, known.lowercase)
    assert record.oov_share(["The", vocabulary[0], "zzzquokka"], plain) == round(2 / 3, 4)


class _FailingStore(FolderStore):
    def put(self, key: str, body: bytes) -> None:
        raise ConnectionError("store unreachable")


def test_a_failing_store_never_fails_or_changes_the_answer(tmp_path: Path) -> None:
    emitted: list[Counts] = []
    model, body = _model("breast-cancer-mlp"), _body("x", _held_back("breast-cancer-mlp"))
    plain = Pipeline(API_REQUEST).handle(model, body, {})
    failing = Pipeline(API_REQUEST, [_hook(_FailingStore(tmp_path), emitted=emitted)]
                       ).handle(model, body, {})
    assert failing == plain
    assert emitted[0][("breast-cancer-mlp", "dropped", "store_error")] == 1


@mock_aws
def test_erasure_on_a_versioned_bucket_leaves_nothing() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="capture")
    s3.put_bucket_versioning(Bucket="capture", VersioningConfiguration={"Status": "Enabled"})
    store = aws_capture.S3Store("capture", s3)
    model, body = _model("breast-cancer-mlp"), _body("x", _held_back("breast-cancer-mlp"))
    pipeline = Pipeline(API_REQUEST, [_hook(store)])
    for _ in range(3):
        pipeline.handle(model, body, {})
    records = list(capture_store.read(store, "breast-cancer-mlp"))
    assert len(records) == 3
    # a window: the first record only; an object rewritten keeps no older version
    first = capture_store.parse_time(records[0]["time"])
    assert capture_store.erase(store, "breast-cancer-mlp", since=first,
                               until=first + timedelta(microseconds=1)) == 1
    assert len(list(capture_store.read(store, "breast-cancer-mlp"))) == 2
    key = next(store.keys("capture/"))
    s3.put_object(Bucket="capture", Key=key, Body=s3.get_object(Bucket="capture", Key=key)[
        "Body"].read())  # a second version of one object
    assert capture_store.erase(store, "breast-cancer-mlp") == 2
    listed = s3.list_object_versions(Bucket="capture")
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")


def _job_hook(store: Any, job_id: str) -> CaptureHook:
    config = parse({"sampling": 100})
    return CaptureHook(lambda _model: config, store, lambda: KEY, job_id=job_id)


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_a_batch_jobs_records_are_kept_apart_and_erased_with_it_alone(
        tmp_path: Path, kind: str) -> None:
    with mock_aws():
        if kind == "s3":
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket="capture")
            s3.put_bucket_versioning(Bucket="capture",
                                     VersioningConfiguration={"Status": "Enabled"})
            store: Any = aws_capture.S3Store("capture", s3)
        else:
            store = FolderStore(tmp_path)
        model, body = _model("breast-cancer-mlp"), _body("x", _held_back("breast-cancer-mlp"))
        since = datetime.now(UTC) - timedelta(days=2)
        # two jobs (one a prefix of the other's id), and the API's own records
        for hook in (_job_hook(store, "job-a"), _job_hook(store, "job-a-2"),
                     _hook(store)):
            pipeline = Pipeline(API_REQUEST, [hook], path="batch" if hook.job_id else "api")
            for _ in range(2):
                pipeline.handle(model, body, {})
        keys = list(store.keys("capture/"))
        assert sum("/job-job-a/" in key for key in keys) == 2 and len(keys) == 6
        # an old flush of the job, two days back, is in its folder of that day
        old = capture_store.object_key("breast-cancer-mlp", since + timedelta(hours=1), "job-a")
        store.put(old, store.get(next(k for k in keys if "/job-job-a/" in k)))
        by_job = {r.get("job_id") for r in capture_store.read(store, "breast-cancer-mlp")}
        assert by_job == {"job-a", "job-a-2", None}
        assert capture_store.erase_job(store, "breast-cancer-mlp", "job-a", since) == 3
        left = list(capture_store.read(store, "breast-cancer-mlp"))
        assert sorted(r.get("job_id") or "api" for r in left) == ["api", "api", "job-a-2",
                                                                  "job-a-2"]
        assert capture_store.erase_job(store, "breast-cancer-mlp", "job-a", since) == 0
        if kind == "s3":  # every version gone, not hidden behind a delete marker
            listed = s3.list_object_versions(Bucket="capture", Prefix="capture/")
            assert not any("/job-job-a/" in v["Key"] for v in (
                *listed.get("Versions", []), *listed.get("DeleteMarkers", [])))
    for bad in ("", "a/b", "..", "."):
        with pytest.raises(ValueError, match="not a batch job id"):
            capture_store.job_prefixes("m", bad, since)


def test_local_api_captures_held_back_rows_for_make_capture(tmp_path: Path) -> None:
    folder = tmp_path / "capture"
    rows = _held_back("breast-cancer-mlp")
    with local_api_server(tmp_path / "api.log", extra=("--capture-dir", str(folder))) as (
            client, _port):
        since = datetime.now(UTC).isoformat()
        for row in rows:
            answer = client.post("/v2/models/breast-cancer-mlp/infer",
                                 content=_body("x", [row]))
            assert answer.status_code == 200, answer.text
        answer = client.post("/v2/models/text-topics/infer",
                             content=_body("t", [SECRET_TEXT], "BYTES"))
        assert answer.status_code == 200, answer.text
    out = io.StringIO()
    with redirect_stdout(out):
        assert aws_capture.main(["read", "--model", "breast-cancer-mlp", "--since", since,
                                 "--dir", str(folder)]) == 0
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert np.allclose([r["inputs"]["features"][0] for r in records], rows, rtol=1e-6)
    written = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    logged = (tmp_path / "api.log").read_text()
    for word in SECRET_TEXT.split():
        assert word.encode() not in written and word not in logged
    assert aws_capture.main(["erase", "--model", "text-topics", "--dir", str(folder)]) == 0
    assert not list(folder.glob("capture/text-topics/**/*.jsonl"))


def test_make_capture_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    # `make capture MODEL=m | head -2`: far more records than the pipe holds, the reader
    # gone after two lines; no BrokenPipeError traceback, exit 0
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    pipeline = Pipeline(API_REQUEST, [_hook(FolderStore(tmp_path))])
    model, rows = _model("breast-cancer-mlp"), _held_back("breast-cancer-mlp")
    pipeline.handle(model, _body("breast-cancer-mlp", rows[:1]), {})
    (key,) = [p for p in tmp_path.rglob("*.jsonl")]
    key.write_bytes(key.read_bytes() * 2_000)  # about 1 MB of records
    reader = subprocess.Popen(
        [sys.executable, "-m", "model_api.aws.capture", "read", "--model", "breast-cancer-mlp",
         "--dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "serving" / "python")})
    assert reader.stdout is not None and reader.stderr is not None
    assert json.loads(reader.stdout.readline())["model"] == "breast-cancer-mlp"
    reader.stdout.close()
    error = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 0, error
    assert "Traceback" not in error and "BrokenPipe" not in error


def test_a_record_that_could_only_be_dropped_as_too_large_is_not_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model_api.capture import record
    from model_api.limits import BATCH_RECORD

    emitted: list[Counts] = []
    hook = _hook(FolderStore(tmp_path), emitted=emitted)
    hook.sink.max_record_bytes = 4096  # type: ignore[misc]
    pipeline = Pipeline(BATCH_RECORD, [hook], path="batch")
    model, rows = _model("breast-cancer-mlp"), np.asarray(_held_back("breast-cancer-mlp"),
                                                         dtype=np.float32)
    built = []
    original = record.build
    monkeypatch.setattr(record, "build", lambda *a, **k: built.append(1) or original(*a, **k))
    for count in (1, 2_000, 2_000):  # a small record, then two far over the limit
        pipeline.predict_with(pipeline.from_arrays(model, {"features": rows[np.arange(count)
                                                                            % len(rows)]}),
                              lambda request: _run(model, request))
        pipeline.flush()
    # Built: the first record (stored) and, before the second, a probe of 64 rows that
    # shows it far over the limit: neither the second nor the third is built, both are
    # counted as built and dropped (too_large), as they were when they were built
    assert len(built) == 2
    assert emitted[1:] == [{("breast-cancer-mlp", "captured", ""): 1,
                            ("breast-cancer-mlp", "dropped", "too_large"): 1}] * 2


def test_settings_whose_rule_names_an_input_the_model_lacks_keep_no_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A misspelt input in a rule (`feature: drop` for `features`) must not leave that input
    kept in full: the hook keeps no record of the model, counts each as config_mismatch and
    logs the reason once, naming the rule and the inputs (never the data)."""
    emitted: list[Counts] = []
    hook = _hook(FolderStore(tmp_path), emitted=emitted, rules={"feature": "drop"})
    pipeline = Pipeline(API_REQUEST, [hook])
    model, rows = _model("breast-cancer-mlp"), _held_back("breast-cancer-mlp")
    with caplog.at_level(logging.ERROR, logger="model_api.capture.hook"):
        for _ in range(2):
            answer = pipeline.handle(model, _body("breast-cancer-mlp", rows[:2]), {})
            assert json.loads(answer.body)["outputs"]  # answered as ever
    assert list(capture_store.read(FolderStore(tmp_path), "breast-cancer-mlp")) == []
    assert sum(e.get(("breast-cancer-mlp", "dropped", "config_mismatch"), 0)
               for e in emitted) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "no input 'feature'" in errors[0] and "features" in errors[0]
    assert str(rows[0][0]) not in errors[0]
    # The same settings with the input's own name keep the record, the input dropped
    fitting = _hook(FolderStore(tmp_path / "ok"), rules={"features": "drop"})
    Pipeline(API_REQUEST, [fitting]).handle(model, _body("breast-cancer-mlp", rows[:2]), {})
    kept = list(capture_store.read(FolderStore(tmp_path / "ok"), "breast-cancer-mlp"))
    assert len(kept) == 1 and "features" not in kept[0]["inputs"]


def test_the_registry_refuses_rules_that_do_not_fit_an_exported_version() -> None:
    """`make build` (the export) and every registry change (add-model, make lint's generated
    files) check each version's inputs: the misspelt rule is an error naming the model."""
    version = next((MODELS_DIR / "breast-cancer-mlp").glob("*")).name
    def entry(rules: dict[str, Any]) -> ModelEntry:
        return ModelEntry("breast-cancer-mlp", "seed", [version], version,
                          capture={"sampling": 20, "rules": rules})
    with pytest.raises(RegistryError, match=r"breast-cancer-mlp \(models.yaml\) version .*no "
                                            r"input 'feature' \(its inputs: features\)"):
        check_capture_inputs(entry({"feature": "drop"}), exported(MODELS_DIR))
    with pytest.raises(RegistryError, match="summary is for BYTES"):
        check_capture_inputs(entry({"features": "summary"}), exported(MODELS_DIR))
    check_capture_inputs(entry({"features": {"round": 1}}), exported(MODELS_DIR))
