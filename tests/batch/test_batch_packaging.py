"""What ships of the batch package: BatchLayer (batch/Makefile LAMBDA_MODULES) holds what the
batch functions import, the runner's image (batch/Dockerfile) what the runner imports, and
neither the local-only machinery (the local submitter and its spot-reclaim player, the local
loop, the sample writer)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT

BATCH = ROOT / "batch"
LOCAL_ONLY = {"local.py", "local_submit.py", "sample.py"}


def imported_batch_modules(*modules: str) -> set[str]:
    """The batch/*.py files that importing `modules` loads (in a fresh interpreter)."""
    script = ("import importlib, json, sys\n"
              f"for name in {list(modules)!r}: importlib.import_module(name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'batch')))")
    env = {"PATH": "", "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'serving' / 'python'}",
           "JOBS_TABLE": "t", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    names = json.loads(result.stdout)
    return {("__init__" if name == "batch" else name.split(".", 1)[1]) + ".py" for name in names}


def lambda_modules() -> set[str]:
    makefile = (BATCH / "Makefile").read_text()
    found = re.search(r"^LAMBDA_MODULES := (.+)$", makefile, re.MULTILINE)
    assert found is not None
    return set(found[1].split())


def image_modules() -> set[str]:
    dockerfile = (BATCH / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.search(r"^COPY ((?:batch/\S+\.py\s+)+)/app/batch/$", dockerfile, re.MULTILINE)
    assert found is not None, "batch/Dockerfile copies the batch modules one by one"
    return {path.removeprefix("batch/") for path in found[1].split()}


def test_the_layer_holds_what_the_batch_functions_import_and_nothing_local() -> None:
    # What functions/batch_{trigger,jobs,state}/app.py import of the package
    needed = imported_batch_modules("batch.submit", "batch.trigger", "batch.jobs",
                                    "batch.keys", "batch.aws", "batch.state")
    assert needed <= lambda_modules()
    assert not lambda_modules() & LOCAL_ONLY


def test_the_image_holds_what_the_runner_imports_and_nothing_local() -> None:
    assert image_modules() == imported_batch_modules("batch.runner")
    assert not image_modules() & LOCAL_ONLY
    dockerfile = (BATCH / "Dockerfile").read_text()
    assert "COPY batch /app/batch" not in dockerfile and "COPY batch/ " not in dockerfile


def test_the_local_submitter_is_not_in_the_shipped_modules() -> None:
    for name in lambda_modules() | image_modules():
        text = (BATCH / name).read_text()
        assert "SIGKILL" not in text and "class LocalSubmitter" not in text, name
