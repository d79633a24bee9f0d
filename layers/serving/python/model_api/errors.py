"""Typed protocol errors: raised anywhere in the library, turned into HTTP answers in one place.

The adapter answers every `ModelAPIError` with its `status` and the body `{"error": message}`,
so a message must tell a person what was wrong and what is allowed instead.
"""

from __future__ import annotations

from collections.abc import Iterable

# The most characters of a caller's own text (a model name, a version, a file name) an error
# message echoes: a 20,000-character name is clipped, never sent back whole.
ECHO_LIMIT = 64


def echoed(value: object, limit: int = ECHO_LIMIT) -> str:
    """`value` quoted (its repr) for an error message, clipped to `limit` characters with the
    length it had: 'aaaa…' (20000 characters)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}…{size}"


class ModelAPIError(Exception):
    """A failure the caller should see, with the HTTP status the protocol gives it."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # Seconds after which the same request may succeed (sent as Retry-After); None: not said.
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """Headers the answer carries besides the error body (Retry-After, RFC 9110 10.2.3)."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r})"


class BadRequest(ModelAPIError):
    """400: the request is malformed or does not fit the model's signature."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class NotFound(ModelAPIError):
    """404: no such model, version or output."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class TooLarge(ModelAPIError):
    """413: the request (or the answer it asks for) is over a limit of `limits.py`."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class NotReady(ModelAPIError):
    """503: the model exists but failed to load (e.g. sha256 mismatch); it is never served."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class Loading(ModelAPIError):
    """503 with Retry-After: the model is still being read from the model store (a large model's
    cold start, model_api.store); ask again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(503, message, retry_after=max(1, retry_after))


class Unavailable(ModelAPIError):
    """503 with Retry-After: something the request needs is unavailable for now (a function at
    its concurrency limit, a store that does not answer); the message says what and why."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(503, message, retry_after=retry_after)


def no_version(model: str, version: str, versions: Iterable[str]) -> NotFound:
    """The 404 for a version `model` does not have, listing those it has: what an infer, ready
    or jobs request naming it answers."""
    listed = ", ".join(f"'{name}'" for name in versions) or "none"
    return NotFound(f"model {echoed(model)} has no version {echoed(version)}; versions: {listed}")
