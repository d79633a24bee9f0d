"""Docker-free local API Gateway (REST, Lambda proxy v1.0) + Lambda runner for the SAM template.

`sam local start-api` / `sam local invoke` need a container runtime; this package serves the same
routes from plain worker processes so that users without Docker, CI and the tests get the same
answers API Gateway and Lambda would give.

    template.py  the template, read with SAM CLI's own providers
    sandbox.py   a function's Lambda layout: code, layers merged into a local /opt, environment
    bootstrap.py the runtime inside a worker process (stdlib only, started with python -I -S)
    worker.py    worker processes and per-function pools; Lambda's payload limits, timeout and
                 concurrency; this machine's worker budget, shared fairly
    logs.py      the children's log lines: whole, routine ones to .local-api/logs/
    routes.py    request -> template route, as API Gateway's resource tree matches
    events.py    HTTP request -> proxy event; handler answer -> HTTP
    gateway.py   API Gateway's own answers (GatewayResponses) and limits
    server.py    the Starlette app on uvicorn;  cli.py  `python -m local_api serve|invoke`
    background.py  the server as a child process on a free port (end-to-end tests, make bench)
    context.py   Lambda's context object for handlers called in-process (tests, batch, bench)

What fails in AWS fails the same way here: no route (MISSING_AUTHENTICATION_TOKEN), wrong or
missing x-api-key when serving with --api-key (INVALID_API_KEY), a body over 10 MB or an event
over Lambda's 6 MB (REQUEST_TOO_LARGE), a handler exception, crash, failed import, malformed
answer, answer over 6 MB or the function's Timeout (INTEGRATION_FAILURE: a Lambda timeout is a
function error, 502 by default), a function past its reserved or the account's concurrency
(INTEGRATION_FAILURE too, 500 by default; this project's template makes the type a 503 with
Retry-After), no answer within API Gateway's 29 s (INTEGRATION_TIMEOUT, 504).
Not emulated: usage-plan throttling and quota, the function's memory limit, authorizers, CORS.
"""
