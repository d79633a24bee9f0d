"""`make batch-local`'s loop end to end, as a user runs it: moto server, upload, the real
trigger handler on the EventBridge event, the runner as a local process, the download."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.batch.conftest import FEATURES, MODEL, expected, registry, request_line, tiny_model

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(11)


def run_local(models_dir: Path, source: Path, output: Path, *options: str
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "local_api.batch.loop", "--model", MODEL, "--input", str(source),
         "--output", str(output), "--models-dir", str(models_dir),
         "--registry", str(registry(models_dir)), *options],
        cwd=ROOT, env={**env, "BATCH_CHUNK_ROWS": "40"}, capture_output=True, text=True,
        timeout=120)


def test_jsonl_upload_to_download(models_dir: Path, tmp_path: Path) -> None:
    lines = [request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) for n in range(150)]
    lines[77] = "garbage"
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out" / "answers.jsonl"
    result = run_local(models_dir, source, output)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["job"]["status"] == "succeeded"
    assert (summary["job"]["rows_read"], summary["job"]["errors"]) == (150, 1)
    assert "trigger: {'status': 'submitted'" in result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 150
    assert [r["id"] for r in records] == [f"r{n}" if n != 77 else None for n in range(150)]
    assert records[77]["line"] == 78 and "error" in records[77]


def test_a_spot_reclaim_midway_is_resumed_from_the_checkpoint(models_dir: Path,
                                                              tmp_path: Path) -> None:
    count = 6000  # 150 chunks of 40: the kill lands long before the end
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) + "\n"
                              for n in range(count)))
    output = tmp_path / "answers.jsonl"
    # Given a runner killed with SIGKILL once its checkpoint has 200 rows done
    result = run_local(models_dir, source, output, "--kill-after-rows", "200")
    assert result.returncode == 0, result.stderr[-3000:]
    # Then the submitter retried it, the retry resumed at a later chunk, nothing was lost
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["runner_exit_codes"] == [-signal.SIGKILL, 0]
    job = summary["job"]
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    assert (job["rows_read"], job["outputs_written"], job["errors"]) == (count, count, 0)
    killed = re.search(r"spot reclaim played: SIGKILL to runner pid \d+, its checkpoint at "
                       r"chunk (\d+) \((\d+) rows done, ", result.stderr)
    assert killed is not None and int(killed[2]) >= 200
    resumed = re.search(r"resuming job \S+ at chunk (\d+)", result.stderr)
    assert resumed is not None and int(resumed[1]) >= int(killed[1]) > 0
    # and every line has exactly one record, in order
    ids = [json.loads(line)["id"] for line in output.read_text().splitlines()]
    assert ids == [f"r{n}" for n in range(count)]


def test_records_asking_for_explanations_get_them(models_dir: Path, tmp_path: Path) -> None:
    rows = RNG.normal(size=(3, FEATURES))
    lines = [request_line("plain", rows[:1]),
             request_line("why", rows, parameters={"explain": True}),
             request_line("why-no", rows[:1], parameters={"explain": True, "target": 0},
                          outputs=[{"name": "attributions"}, {"name": "base_value"}]),
             request_line("not-a-flag", rows[:1], parameters={"explain": "yes"}),
             request_line("no-flag", rows[:1], outputs=[{"name": "attributions"}])]
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "answers.jsonl"
    result = run_local(models_dir, source, output)
    assert result.returncode == 0, result.stderr[-3000:]
    plain, why, why_no, not_a_flag, no_flag = (
        json.loads(line) for line in output.read_text().splitlines())
    assert [o["name"] for o in plain["outputs"]] == ["label", "probabilities"]
    assert "parameters" not in plain
    sentences = why["parameters"].pop("summary").split("\n")
    assert why["parameters"] == {"method": "kernel_shap", "explained_output": "probabilities"}
    assert len(sentences) == len(rows) and all(s.startswith("Predicted ") for s in sentences)
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in why["outputs"]}
    labels, probabilities = expected(rows)
    np.testing.assert_array_equal(outputs["target"], labels)
    assert outputs["attributions"].shape == (3, FEATURES)
    # Exact Kernel SHAP (4 features: every coalition) adds up to the explained probability.
    np.testing.assert_allclose(outputs["base_value"] + outputs["attributions"].sum(axis=1),
                               probabilities[np.arange(3), labels], atol=1e-5)
    assert [o["name"] for o in why_no["outputs"]] == ["attributions", "base_value"]
    assert "'explain' must be true or false" in not_a_flag["error"]
    assert "unknown output 'attributions'" in no_flag["error"]


def test_npy_upload_to_download(models_dir: Path, tmp_path: Path) -> None:
    rows = RNG.normal(size=(90, FEATURES)).astype(np.float32)
    source = tmp_path / "tensor.npy"
    np.save(source, rows)
    result = run_local(models_dir, source, tmp_path / "result.npy")
    assert result.returncode == 0, result.stderr[-3000:]
    labels, probabilities = expected(rows)
    np.testing.assert_array_equal(np.load(tmp_path / "result.label.npy"), labels)
    np.testing.assert_allclose(np.load(tmp_path / "result.probabilities.npy"), probabilities,
                               rtol=1e-5, atol=1e-6)
    marker = json.loads((tmp_path / "result._SUCCESS.json").read_text())
    assert marker["rows_read"] == 90 and set(marker["outputs"]) == {"label", "probabilities"}


def test_an_unknown_model_is_refused_by_the_trigger(models_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text(request_line("a", np.zeros((1, FEATURES))) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    (tmp_path / "out._SUCCESS.json").write_text("{}")  # an earlier run's
    result = subprocess.run(
        [sys.executable, "-m", "local_api.batch.loop", "--model", "no-such-model", "--input",
         str(source), "--output", str(tmp_path / "out.jsonl"), "--models-dir", str(models_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    job = json.loads(result.stdout.splitlines()[-1])["job"]
    assert job["status"] == "failed" and "unknown model 'no-such-model'" in job["reason"]
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out._SUCCESS.json").exists()  # nothing passes for this run's marker


@pytest.mark.parametrize(("options", "said"), [
    (["--shards", "0"], "--shards: `shards` must be an integer from 1 to 20"),
    (["--shards", "-1"], "--shards: `shards` must be an integer from 1 to 20"),
    (["--shards", "4", "--kill-shard", "7"], "--kill-shard must name one of the job's "
                                             "children: 0 to 3, not 7"),
    (["--kill-shard", "-1"], "0 to 19, not -1"),
])
def test_children_that_cannot_be_are_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str],
        said: str) -> None:
    from local_api.batch import loop

    source = tmp_path / "rows.jsonl"
    source.write_text(request_line("a", np.zeros((1, FEATURES))) + "\n")
    with pytest.raises(SystemExit) as exited:
        loop.main(["--model", MODEL, "--input", str(source), "--output",
                   str(tmp_path / "out.jsonl"), *options])
    assert exited.value.code == 2 and said in capsys.readouterr().err


def test_a_job_killed_on_every_attempt_ends_failed_with_the_reason(models_dir: Path,
                                                                   tmp_path: Path) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(request_line(f"r{n}", RNG.normal(size=(1, FEATURES))) + "\n"
                              for n in range(4000)))
    # Given a runner killed with SIGKILL on each of its three attempts
    result = run_local(models_dir, source, tmp_path / "answers.jsonl",
                       "--kill-after-rows", "40", "--kill-attempts", "3")
    # Then the submitter gave up and the jobs API says failed, with why and how often
    assert result.returncode == 1, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["runner_exit_codes"] == [-signal.SIGKILL] * 3
    job = summary["job"]
    assert (job["status"], job["attempts"]) == ("failed", 3)
    assert job["reason"] == ("the local submitter gave up after 3 attempt(s): the runner ended "
                             "with -9, -9, -9 (negative: killed by that signal)")
    assert 40 <= job["rows_read"] < 4000 and not (tmp_path / "answers.jsonl").exists()
    # and each attempt was killed after rows of its own, not at once on the one before's
    mine = re.findall(r"spot reclaim played: .* rows done, (\d+) by this attempt\)",
                      result.stderr)
    assert len(mine) == 3 and all(int(rows) >= 40 for rows in mine), mine


def test_a_store_backed_version_is_read_from_the_local_model_store(tmp_path: Path) -> None:
    """A version kept in the model store (its manifest names the object; its file not in the
    models folder but in model_store/ beside the registry, where add-model keeps it): the loop
    fills its local store as `make serve` does, and the runner reads it from there and says so."""
    models_dir = tiny_model(tmp_path / "models")
    folder = models_dir / MODEL / "1"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["store"] = {"key": f"models/{MODEL}/1/model.onnx",
                         "bytes": (folder / "model.onnx").stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kept = registry(models_dir).parent / "model_store" / MODEL / "1"
    kept.mkdir(parents=True)
    (folder / "model.onnx").rename(kept / "model.onnx")
    rows = RNG.normal(size=(30, FEATURES)).astype(np.float32)
    source = tmp_path / "rows.npy"
    np.save(source, rows)
    result = run_local(models_dir, source, tmp_path / "out" / "answers.npy")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["job"]["status"] == "succeeded"
    assert re.search(rf"model {MODEL} version 1 loaded from the model store "
                     rf"s3://local-model-api-models/models/{MODEL}/1/model.onnx in [\d.]+ s",
                     result.stderr), result.stderr[-3000:]
    label, _ = expected(rows)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "answers.label.npy"), label)
