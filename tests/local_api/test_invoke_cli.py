"""`python -m local_api invoke FUNCTION --event FILE`: one event through one function, as
`sam local invoke -e` runs it; the answer alone on stdout, logs on stderr."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.local_api.conftest import local_api, write_project


def invoke(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    process = local_api("invoke", *args, "--template", str(root / "template.yaml"), cwd=root,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(stdin, timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_invoke_prints_the_handlers_answer(tmp_path: Path) -> None:
    write_project(tmp_path)
    event = {"queryStringParameters": None, "path": "/echo", "body": None}
    (tmp_path / "event.json").write_text(json.dumps(event))
    done = invoke(tmp_path, "EchoFunction", "--event", str(tmp_path / "event.json"))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["statusCode"] == 201
    assert json.loads(answer["body"])["event"] == event
    assert "START RequestId" in done.stderr and "Init Duration" in done.stderr


def test_a_function_error_is_lambdas_error_document_and_status_1(tmp_path: Path) -> None:
    write_project(tmp_path)
    done = invoke(tmp_path, "EchoFunction", "--event", "-",
                  stdin=json.dumps({"queryStringParameters": {"raise": "boom"}}))
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["errorType"] == "RuntimeError" and error["errorMessage"] == "boom"
    assert any("echo.py" in frame for frame in error["stackTrace"])


def test_an_unknown_function_lists_the_known_ones(tmp_path: Path) -> None:
    write_project(tmp_path)
    done = invoke(tmp_path, "Nope")
    assert done.returncode == 2 and done.stdout == ""
    assert "CounterA" in done.stderr


def test_a_handler_that_cannot_be_imported(tmp_path: Path) -> None:
    write_project(tmp_path)
    done = invoke(tmp_path, "BrokenFunction")
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"] == ("Unable to import module 'no_such_module': "
                                     "No module named 'no_such_module'")


def test_each_run_lays_out_its_own_opt_and_removes_it(tmp_path: Path) -> None:
    """Two local runs at once (a `make serve` and the tests, say) never rebuild each other's
    layer trees under a worker that is importing from them: each process has its own."""
    write_project(tmp_path)
    event = json.dumps({"queryStringParameters": None, "path": "/echo", "body": None})
    opts = []
    for _ in range(2):
        done = invoke(tmp_path, "EchoFunction", "--event", "-", stdin=event)
        assert done.returncode == 0, done.stderr
        opts.append(Path(json.loads(json.loads(done.stdout)["body"])["sys_path"][1]))
    assert opts[0] != opts[1] and all(p.name == "python" for p in opts)
    assert not any(p.exists() for p in opts), "a run's /opt tree outlives it"
    assert not any(tmp_path.glob(".local-api*")), "nothing is left in the working folder"
