"""The local API's HTTP/1.1 framing: uvicorn's h11 protocol with RFC 9112's rules for a server
that sits where API Gateway's front door would (the deployed API never sees a raw request).

h11 parses the messages; this refuses, before h11 reads a request's head, what h11 would accept
but RFC 9112 says a server must not act on, and answers what it refuses with a JSON error and a
closed connection (a request whose framing is ambiguous leaves no way to find the next one):

- `Content-Length` together with `Transfer-Encoding` (§6.1: request smuggling): 400;
- more than one `Content-Length` field, or a list in one (§6.3, RFC 9110 §8.6): 400;
- `Transfer-Encoding` in an HTTP/1.0 request (§6.1): 400;
- obs-fold, a header line that starts with whitespace (§5.2; h11 would unfold it): 400;
- a request target over MAX_TARGET_BYTES: 414, as API Gateway's front door answers it; a head
  (request line and header fields) over MAX_HEAD_BYTES: 431.

What h11 refuses itself (invalid chunked encoding, a bad Content-Length, a malformed line) gets
the same JSON 400 instead of uvicorn's plain text. A client that stops sending in the middle of
a request's head or body (a body shorter than its Content-Length) is answered 408 and closed
after READ_TIMEOUT_S seconds without a byte, instead of holding its connection for ever.

Every refusal ends in a lingering close (as nginx and Apache close): the answer is written, the
sending side shut, and what the client still sends is read and dropped for up to LINGER_S
seconds or LINGER_BYTES bytes, so that a client still writing (a 200 KB URL) reads the answer
instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import http
import json
import re
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_TARGET_BYTES = 8192  # API Gateway: the URL of an edge-optimized API, at most 8192 characters
MAX_HEAD_BYTES = 10240  # API Gateway: request line and header values together, 10240 bytes
READ_TIMEOUT_S = 10.0
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024

_HEAD_END = re.compile(rb"\n\r?\n")


@dataclass(frozen=True)
class Refusal:
    """What the server answers, and why, to a request it will not read further."""

    status: int
    message: str

    def response(self) -> bytes:
        """The whole HTTP/1.1 answer: a JSON `{"error": ...}` and `Connection: close`."""
        body = json.dumps({"error": self.message}).encode()
        phrase = http.HTTPStatus(self.status).phrase
        head = (f"HTTP/1.1 {self.status} {phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        return head.encode("latin-1") + body


def head_problem(buffer: bytes) -> Refusal | None:
    """Why the request head at the start of `buffer` (what a connection received and h11 has
    not read yet) must be refused; None when it is fine or not whole yet (and within bounds).
    Only framing is judged here: the rest of the syntax is h11's."""
    start = len(buffer) - len(buffer.lstrip(b"\r\n"))  # h11 skips blank lines before a request
    line_end = buffer.find(b"\n", start)
    request_line = buffer[start:] if line_end == -1 else buffer[start:line_end]
    parts = request_line.split(b" ")
    target = parts[1] if len(parts) > 1 else b""
    if len(target) > MAX_TARGET_BYTES or (len(parts) == 1 and len(request_line) >
                                          MAX_TARGET_BYTES):
        return Refusal(414, f"the request URI is over {MAX_TARGET_BYTES} bytes")
    end = _HEAD_END.search(buffer, start)
    size = (end.start() if end else len(buffer)) - start
    if size > MAX_HEAD_BYTES:
        return Refusal(431, f"the request line and header fields are over {MAX_HEAD_BYTES} bytes")
    if end is None:
        return None
    lines = buffer[start:end.start()].split(b"\n")[1:]
    if any(line[:1] in (b" ", b"\t") for line in lines):
        return Refusal(400, "a header line starts with whitespace (obs-fold, RFC 9112 §5.2): "
                            "send each field on one line")
    names = [line.split(b":", 1)[0].strip().lower() for line in lines]
    lengths = [line for name, line in zip(names, lines, strict=True) if name == b"content-length"]
    if len(lengths) > 1 or (lengths and b"," in lengths[0]):
        return Refusal(400, "more than one Content-Length (RFC 9112 §6.3): send one")
    if b"transfer-encoding" in names:
        if lengths:
            return Refusal(400, "both Content-Length and Transfer-Encoding: the body's length "
                                "is ambiguous (RFC 9112 §6.1); send one of them")
        if request_line.rstrip(b"\r").endswith(b"HTTP/1.0"):
            return Refusal(400, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
    return None


class _Connection(h11.Connection):
    """h11's server connection, judging each request head with head_problem first and keeping
    the reason of any refusal for the protocol's answer."""

    refusal: Refusal | None = None

    def next_event(self) -> Any:
        if self.their_state is h11.IDLE:
            problem = head_problem(self.trailing_data[0])
            if problem is not None:
                self.refusal = problem
                raise h11.RemoteProtocolError(problem.message, problem.status)
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.refusal = Refusal(400, f"invalid HTTP request: {str(error)[:200]}")
            raise


class FramingProtocol(H11Protocol):
    """uvicorn's h11 protocol with the module's framing rules, read timeout and lingering
    close. `read_timeout` is a class attribute: `with_read_timeout` makes a subclass."""

    read_timeout: float = READ_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn: _Connection = _Connection(h11.SERVER,
                                             self.conn._max_incomplete_event_size)
        self._read_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._dropped = 0

    @classmethod
    def with_read_timeout(cls, seconds: float) -> type[FramingProtocol]:
        """This protocol with another read timeout (seconds without a byte mid-request)."""
        return type(cls.__name__, (cls,), {"read_timeout": seconds})

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.close()
            return
        super().data_received(data)
        self._arm_read_timer()

    def handle_events(self) -> None:
        super().handle_events()
        self._arm_read_timer()

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """What uvicorn calls when h11 refuses a request: the refusal's own status and reason
        (head_problem's or h11's), in JSON, then a lingering close."""
        self.refuse(self.conn.refusal or Refusal(400, msg))

    def refuse(self, refusal: Refusal) -> None:
        """Answer `refusal`, stop the request's application (it sees a disconnect), and close
        the connection once the client stops sending (see the module's docstring)."""
        self._cancel_read_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.transport.is_closing():
            return
        self.transport.write(refusal.response())
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    # ---- the read timeout

    def _waiting_for_the_client(self) -> bool:
        """Whether a request is part-way in: its head begun, or its body not yet whole."""
        state = self.conn.their_state
        if state is h11.IDLE:
            return bool(self.conn.trailing_data[0].strip(b"\r\n"))
        return state is h11.SEND_BODY

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        if not self._lingering and not self.transport.is_closing() and \
                self._waiting_for_the_client():
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self._waiting_for_the_client() or self.transport.is_closing():
            return
        if self.flow.read_paused:  # our own back-pressure, not the client's silence
            self._arm_read_timer()
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # an answer is on its way already: nothing else to say
            return
        self.refuse(Refusal(408, f"the request stopped arriving: no byte for "
                                 f"{self.read_timeout:g} s before its head or body was whole "
                                 "(a body shorter than its Content-Length?)"))
