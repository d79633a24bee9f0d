"""Content codings as a REST API with payload compression applies them (`MinimumCompressionSize`).

API Gateway decodes a request body sent with `Content-Encoding` gzip, deflate or identity before
it invokes the function, and answers 415 Unsupported Media Type when the coding is another one or
the body is not what the header says ("Call an API method with a compressed payload in API
Gateway"). It compresses an answer when the request's highest-priority `Accept-Encoding` coding
is one of those, the function's answer has no `Content-Encoding` of its own, and the answer is
at least `MinimumCompressionSize` bytes ("Receive an API response with a compressed payload in
API Gateway"). Written here with the standard library's zlib: Starlette's GZipMiddleware only
compresses, with its own threshold and rules, and decodes nothing.

Decoding is bounded: it stops as soon as the decoded body passes `limit` bytes, so a small
compressed body that expands without end (a decompression bomb) costs at most `limit` bytes of
memory before it is refused.
"""

from __future__ import annotations

import zlib

SUPPORTED = ("gzip", "deflate", "identity")
_CHUNK = 64 * 1024


class UnsupportedCoding(ValueError):
    """The coding is not one API Gateway decodes, or the body is not encoded as it says: 415."""


class DecodedTooLarge(ValueError):
    """The decoded body passes the limit: 413."""


def _codings(header: str) -> list[str]:
    """The codings of a Content-Encoding header in the order they were applied."""
    return [part.strip().lower() for part in header.split(",") if part.strip()]


def _inflate(body: bytes, coding: str, limit: int) -> bytes:
    """One gzip or deflate (zlib-wrapped, or raw as some clients send it) layer, bounded."""
    # RFC 9110's deflate is the zlib format; raw deflate is accepted too, as browsers do.
    attempts = [zlib.MAX_WBITS | 16] if coding == "gzip" else [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    error: zlib.error | None = None
    for wbits in attempts:
        decoder = zlib.decompressobj(wbits)
        out = bytearray()
        try:
            pending = body
            while pending:
                out += decoder.decompress(pending, _CHUNK)
                if len(out) > limit:
                    raise DecodedTooLarge(f"the decoded body is over {limit} bytes")
                pending = decoder.unconsumed_tail
                if decoder.eof:
                    break
        except zlib.error as exc:
            error = exc
            continue
        if not decoder.eof:
            error = zlib.error("the compressed body is truncated")
            continue
        if decoder.unused_data:
            raise UnsupportedCoding(f"{len(decoder.unused_data)} bytes follow the {coding} data")
        return bytes(out)
    raise UnsupportedCoding(f"the body is not {coding}-encoded: {error}")


def check_supported(content_encoding: str | None) -> None:
    """UnsupportedCoding unless every coding named is gzip, deflate or identity."""
    for coding in _codings(content_encoding or ""):
        if coding not in SUPPORTED:
            raise UnsupportedCoding(f"content coding {coding!r} is not supported "
                                    f"(supported: {', '.join(SUPPORTED)})")


def decode(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body with every coding of `content_encoding` undone (last applied, first undone).

    Raises UnsupportedCoding (415) for a coding other than gzip, deflate or identity, or a body
    that is not encoded as declared; DecodedTooLarge (413) once the decoded body passes `limit`
    bytes. No body, or no header, is returned as is.
    """
    check_supported(content_encoding)
    if not content_encoding or not body:
        return body
    for coding in reversed(_codings(content_encoding)):
        if coding != "identity":
            body = _inflate(body, coding, limit)
    return body


def negotiate(accept_encoding: str | None) -> str | None:
    """The coding to compress an answer with: the request's highest-priority Accept-Encoding
    coding (highest q; of equal ones, the first listed) when it is gzip or deflate; None
    otherwise (no header, `*`, identity, or a top choice API Gateway does not support, such as
    `br, gzip`: API Gateway then compresses nothing)."""
    if not accept_encoding:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_encoding.split(",")):
        name, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name and quality > 0:
            ranked.append((quality, -index, name.lower()))
    if not ranked:
        return None
    _, _, chosen = max(ranked)  # the highest quality; of equals, the first listed
    return chosen if chosen in ("gzip", "deflate") else None


def encode(body: bytes, coding: str) -> bytes:
    """`body` compressed with gzip or deflate (the zlib format, RFC 9110)."""
    if coding == "gzip":
        compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    else:
        compressor = zlib.compressobj()
    return compressor.compress(body) + compressor.flush()


def with_vary(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` with `Accept-Encoding` named in `Vary` (RFC 9110 §12.5.5): added to a Vary
    the answer has (case-insensitively, unless it is there or `*`), else a new field."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            listed = {part.strip().lower() for part in value.split(",")}
            if listed & {"accept-encoding", "*"}:
                return headers
            return [*headers[:index], (name, f"{value}, Accept-Encoding"), *headers[index + 1:]]
    return [*headers, ("Vary", "Accept-Encoding")]
