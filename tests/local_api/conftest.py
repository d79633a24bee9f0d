"""A tiny SAM project in tmp_path (no models, no build) and a local API server running it.

Its functions exercise what the local API must do: EchoFunction answers with the event, its
context, environment and sys.path, or misbehaves on request (?sleep=, ?raise=, ?exit=,
?bytes=, ?answer=); BrokenFunction's handler does not exist; CounterA/CounterB run the same
module with different environments to show that each worker keeps its own module state;
OneAtATime has a reserved concurrency of 1. Two
layers check Lambda's /opt layout (a later layer's file wins).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from local_api.background import free_port
from tests.conftest import ROOT

ECHO = '''
import base64, json, os, sys, time

COLD = {"pid": os.getpid(), "calls": 0}


def handler(event, context):
    COLD["calls"] += 1
    query = event.get("queryStringParameters") or {}
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    if "print" in query:  # long lines, each written in two pieces a little apart
        for n in range(20):
            sys.stdout.write(f"LINE {query['print']} {n} ")
            sys.stdout.flush()
            time.sleep(0.005)
            sys.stdout.write("x" * 10000 + " END\\n")
            sys.stdout.flush()
    if "raise" in query:
        raise RuntimeError(query["raise"])
    if "exit" in query:
        os._exit(int(query["exit"]))
    if "bytes" in query:
        blob = os.urandom(int(query["bytes"]))
        return {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"},
                "body": base64.b64encode(blob).decode(), "isBase64Encoded": True}
    if "answer" in query:
        return json.loads(query["answer"])
    import shared
    body = {"event": event, "pid": COLD["pid"], "calls": COLD["calls"], "shared": shared.WHO,
            "sys_path": sys.path, "env": dict(os.environ),
            "context": {"aws_request_id": context.aws_request_id,
                        "function_name": context.function_name,
                        "memory_limit_in_mb": context.memory_limit_in_mb,
                        "invoked_function_arn": context.invoked_function_arn,
                        "remaining_ms": context.get_remaining_time_in_millis()}}
    return {"statusCode": 201, "headers": {"Content-Type": "application/json", "X-One": "1"},
            "multiValueHeaders": {"X-Many": ["a", "b"]}, "body": json.dumps(body)}
'''

COUNTER = '''
import os

COUNT = 0
NAME = os.environ["COUNTER_NAME"]


def handler(event, context):
    global COUNT
    COUNT += 1
    return {"statusCode": 200, "body": f"{NAME} {COUNT} {os.getpid()}"}
'''

TEMPLATE = '''
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Timeout: 2
    MemorySize: 256
    Environment:
      Variables:
        MODELS_DIR: /opt/models
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: test
      BinaryMediaTypes: ["*~1*"]
      MinimumCompressionSize: 1024
      GatewayResponses:
        DEFAULT_4XX:
          ResponseTemplates:
            application/json: '{"error": $context.error.messageString}'
        DEFAULT_5XX:
          ResponseTemplates:
            application/json: '{"error": $context.error.messageString}'
        MISSING_AUTHENTICATION_TOKEN:
          StatusCode: 404
          ResponseTemplates:
            application/json: '{"error": "No such route: $context.httpMethod $context.path"}'
        INTEGRATION_FAILURE:
          StatusCode: 503
          ResponseParameters:
            Headers:
              Retry-After: "'1'"
          ResponseTemplates:
            application/json: '{"error": "The function was throttled or failed"}'
  LayerOne:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer_one/}
  LayerTwo:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layer_two/}
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: echo.handler
      Layers: [!Ref LayerOne, !Ref LayerTwo]
      Events:
        Get: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /echo, Method: GET}}
        Post: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /echo, Method: POST}}
        Item: {Type: Api, Properties: {RestApiId: !Ref Api, Path: "/items/{id}", Method: GET}}
        Fixed: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /items/fixed, Method: GET}}
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: echo.handler
      Timeout: 20
      Events:
        Get: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /slow, Method: GET}}
  OneAtATime:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: echo.handler
      Layers: [!Ref LayerOne, !Ref LayerTwo]
      ReservedConcurrentExecutions: 1
      Events:
        Get: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /one, Method: GET}}
  BrokenFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: no_such_module.handler
      Events:
        Get: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /broken, Method: GET}}
  CounterA:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: counter.handler
      Environment: {Variables: {COUNTER_NAME: a}}
      Events:
        Get: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /a, Method: GET}}
  CounterB:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: counter.handler
      Environment: {Variables: {COUNTER_NAME: b}}
      Events:
        Get: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /b, Method: GET}}
'''


def write_project(root: Path) -> Path:
    """The tiny project's files; returns its template."""
    files = {
        "template.yaml": TEMPLATE,
        "code/echo.py": ECHO,
        "code/counter.py": COUNTER,
        "layer_one/python/shared.py": 'WHO = "layer one"\n',
        "layer_one/python/only_one.py": "",
        "layer_one/models/m/1/manifest.json": "{}",
        "layer_two/python/shared.py": 'WHO = "layer two"\n',
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "template.yaml"


def local_api(*args: str, cwd: Path, **kwargs: object) -> subprocess.Popen[str]:
    """`python -m local_api ARGS` from cwd, with this repository importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_DEFAULT_REGION": "us-east-1"}
    return subprocess.Popen([sys.executable, "-m", "local_api", *args], cwd=cwd, env=env,
                            text=True, **kwargs)  # type: ignore[call-overload]


@dataclass
class Server:
    process: subprocess.Popen[str]
    client: httpx.Client
    log: Path
    port: int

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Stop it as a user would; its whole output."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
        return self.log.read_text()


def start_server(root: Path, *extra: str) -> Server:
    template = write_project(root)
    port = free_port()
    log = root / "server.log"
    with log.open("w") as out:
        process = local_api("serve", "--template", str(template), "--port", str(port), *extra,
                            cwd=root, stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.get("/")
            return Server(process, client, log, port)
        except httpx.TransportError:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("project"), "--integration-timeout", "3",
                           "--capture", "0")
    yield running
    output = running.stop()
    # The only tracebacks are the handler's own errors, logged as Lambda logs them.
    assert output.count("Traceback") == output.count("[ERROR] "), output
    assert running.process.returncode == 0, output
