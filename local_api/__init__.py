"""Docker-free local API Gateway (REST, Lambda proxy v1.0) + Lambda runner for the SAM template.

`sam local start-api` / `sam local invoke` need a container runtime; this package serves the same
routes from plain worker processes so that users without Docker, CI and the tests get the same
answers API Gateway and Lambda would give.
"""
