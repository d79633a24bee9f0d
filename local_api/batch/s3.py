"""The local S3 of `make serve`: a moto server that also refuses presigned URLs as S3 does.

moto (5.x) does not check query-string (presigned) signatures at all: a tampered URL, one past
its expiry, or a body longer than the Content-Length the URL was signed for would all be
accepted, so the asynchronous jobs' upload and output URLs could not be tested against it.
`PresignedUrlChecks` is WSGI middleware in front of moto's own application that checks every
request carrying `X-Amz-Signature` the way S3 does (SigV4 query authentication,
https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html), recomputing the
signature with botocore's own signer (`S3SigV4QueryAuth`), and answers S3's 403 errors:
`AccessDenied` ("Request has expired", or not yet valid), `SignatureDoesNotMatch` (any byte
of the URL changed, or a signed header such as Content-Length different), or
`InvalidAccessKeyId`. Requests signed in headers (the SDK's) go to moto unchecked, as before.

`KeepPutBodies` (between the checks and moto) keeps the bytes of every PUT. moto runs behind
werkzeug, which parses a body sent with a form Content-Type as a form: with
`application/x-www-form-urlencoded` (what `curl --data-binary` and Python's `urllib` send by
default) or `multipart/form-data`, moto stored 0 bytes and answered 200 (getmoto/moto#3363).
S3 stores a PUT's body as sent, whatever its Content-Type (which a presigned URL does not sign
unless asked to). The one difference left: such an object's recorded Content-Type is
`application/octet-stream` here.

Local only (neither BatchLayer nor the runner's image carries it):
`python -m local_api.batch.s3 --port N` serves it until stopped.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

LOG = logging.getLogger(__name__)
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_EXPIRES = 7 * 24 * 3600  # S3's longest presigned URL (SigV4)
CLOCK_SKEW = 15 * 60  # S3 refuses a request dated more than 15 minutes ahead

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Refused(Exception):
    """A presigned request S3 would refuse: its error code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _header(environ: Mapping[str, Any], name: str) -> str | None:
    if name == "content-length":
        return environ.get("CONTENT_LENGTH") or None
    if name == "content-type":
        return environ.get("CONTENT_TYPE") or None
    value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return None if value is None else str(value)


def check(environ: Mapping[str, Any], secrets: Mapping[str, str],
          now: float | None = None) -> None:
    """Raise Refused unless the presigned request in `environ` (a WSGI environ) is what S3
    would accept: a known access key, a signature over exactly this method, path, query and
    signed headers, and a time within [X-Amz-Date, X-Amz-Date + X-Amz-Expires]."""
    query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    params = dict(query)
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise Refused("AuthorizationQueryParametersError",
                      f"X-Amz-Algorithm must be {ALGORITHM}")
    try:
        key_id, date, region, service, terminator = params["X-Amz-Credential"].split("/")
        signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(params["X-Amz-Expires"])
        signed_headers = params["X-Amz-SignedHeaders"].split(";")
        signature = params["X-Amz-Signature"]
    except (KeyError, ValueError):
        raise Refused("AuthorizationQueryParametersError",
                      "the query lacks a well-formed X-Amz-Credential, X-Amz-Date, "
                      "X-Amz-Expires, X-Amz-SignedHeaders or X-Amz-Signature") from None
    if not 1 <= expires <= MAX_EXPIRES:
        raise Refused("AuthorizationQueryParametersError",
                      f"X-Amz-Expires must be 1 to {MAX_EXPIRES} seconds")
    secret = secrets.get(key_id)
    if secret is None:
        raise Refused("InvalidAccessKeyId",
                      "The AWS Access Key Id you provided does not exist in our records.")
    now = time.time() if now is None else now
    start = signed_at.timestamp()
    if now > start + expires:
        raise Refused("AccessDenied", "Request has expired")
    if start > now + CLOCK_SKEW:
        raise Refused("AccessDenied", "Request is not yet valid")
    # The request as the signer saw it: same method, path (as sent, already encoded), query
    # without the signature, and only the signed headers; then botocore's own SigV4 steps.
    unsigned = [(k, v) for k, v in query if k != "X-Amz-Signature"]
    host = _header(environ, "host") or ""
    path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(
        environ.get("PATH_INFO", ""))
    url = f"http://{host}{path.split('?', 1)[0]}?{urlencode(unsigned, quote_via=quote)}"
    headers = {}
    for name in signed_headers:
        value = _header(environ, name)
        if value is None:
            raise Refused("SignatureDoesNotMatch", f"the signed header {name} is missing")
        headers[name] = value
    request = AWSRequest(method=environ["REQUEST_METHOD"], url=url, headers=headers)
    request.context["timestamp"] = params["X-Amz-Date"]
    signer = S3SigV4QueryAuth(Credentials(key_id, secret), service, region, expires=expires)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, signature):
        raise Refused("SignatureDoesNotMatch", "The request signature we calculated does not "
                      "match the signature you provided. Check your key and signing method.")
    del date, terminator  # the scope is part of the signed string: a changed one fails above


class PresignedUrlChecks:
    """WSGI middleware: presigned requests are checked (`check`) before `app` sees them."""

    def __init__(self, app: WsgiApp, secrets: Mapping[str, str]) -> None:
        self.app, self.secrets = app, dict(secrets)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        if "X-Amz-Signature=" not in environ.get("QUERY_STRING", ""):
            return self.app(environ, start_response)
        try:
            check(environ, self.secrets)
        except Refused as refused:
            LOG.warning("presigned %s %s refused: %s %s", environ.get("REQUEST_METHOD"),
                        environ.get("PATH_INFO"), refused.code, refused.message)
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{refused.code}</Code>'
                    f"<Message>{refused.message}</Message></Error>").encode()
            start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                             ("Content-Length", str(len(body))),
                                             ("Connection", "close")])
            return [body]
        return self.app(environ, start_response)


# Media types werkzeug parses as a form, consuming the body moto would store (werkzeug.formparser).
FORM_MEDIA_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
STORED_AS = "application/octet-stream"


class KeepPutBodies:
    """WSGI middleware: a PUT whose Content-Type is a form type reaches `app` as
    `application/octet-stream`, so its body is stored byte for byte, as S3 stores it; every
    other request passes unchanged. Put it inside `PresignedUrlChecks`, which checks a signed
    Content-Type against the value the client sent."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "PUT":
            media_type = str(environ.get("CONTENT_TYPE") or "").split(";", 1)[0]
            if media_type.strip().lower() in FORM_MEDIA_TYPES:
                environ["CONTENT_TYPE"] = STORED_AS
        return self.app(environ, start_response)


class OneLineErrors(logging.Filter):
    """moto's own failures as one line (type and message), not werkzeug's traceback: they are
    500s that botocore retries, such as moto's ListObjectVersions racing a concurrent PUT of
    the same prefix ('NoneType' object is not iterable), seen while a job is erased mid-run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Error on request:"):  # werkzeug renders the traceback into it
            last = message.strip().splitlines()[-1]
            record.msg, record.args = f"moto failed on a request (a 500): {last}", None
        return True


def _keeps_its_value(garbage: bool = False) -> None:
    """A listed copy's `dispose`: its bytes are the original key's, which keeps them."""


def listings_share_values() -> None:
    """Make moto's ListObjectVersions copy no object's bytes (this process's moto).

    moto (5.2.5, and 5.2.6 alike) answers every ListObjectVersions by deep-copying every version
    of every key in the bucket, whatever the prefix asked, to mark the latest on the copies:
    each copy writes the object's bytes into a temporary file of its own, and moto keeps every
    model instance it makes (`BaseModel.instances_tracked`), so none is ever freed. A long
    `make serve` filled the machine's disk that way (15.7 GB held by one server after a few
    hundred listings of 20-40 MB objects; 3 objects of 20 MiB and 10 listings: 60 MiB held
    became 660), and every DELETE of a job lists versions (batch.erase). Here a listed copy
    takes the key's attributes and shares its bytes (never closing them), untracked; what a
    listing answers is unchanged. Real S3 is not affected."""
    from moto.s3.models import FakeKey

    def listed_copy(key: FakeKey, memo: dict[int, Any]) -> FakeKey:
        copy = object.__new__(FakeKey)  # not BaseModel.__new__, which tracks it for ever
        copy.__dict__.update(key.__dict__)
        copy.dispose = _keeps_its_value  # type: ignore[method-assign]
        return copy

    FakeKey.__deepcopy__ = listed_copy  # type: ignore[attr-defined]


def serve(host: str, port: int, secrets: Mapping[str, str]) -> None:
    """Serve moto's S3, DynamoDB, SQS, EventBridge ... with presigned URLs checked, every
    PUT's body kept as sent (KeepPutBodies) and listings that copy no object's bytes
    (listings_share_values)."""
    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    listings_share_values()
    app = PresignedUrlChecks(KeepPutBodies(DomainDispatcherApplication(create_backend_app)),
                             secrets)
    make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler
                ).serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_api.batch.s3", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--access-key", default="testing")
    parser.add_argument("--secret-key", default="testing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.WARNING)  # a line per request otherwise
    werkzeug.addFilter(OneLineErrors())
    serve(args.host, args.port, {args.access_key: args.secret_key})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
