"""Match a request to a template route as API Gateway's resource tree does.

A literal path segment beats a `{param}`, which beats a greedy `{proxy+}`; a path that exists
with another method is no match either (API Gateway answers both with
MISSING_AUTHENTICATION_TOKEN). Segments are split before percent-decoding, so an encoded `/`
stays inside its path parameter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from local_api.template import RouteSpec

_PARAM = re.compile(r"^\{([^{}+]+)(\+?)\}$")


@dataclass(frozen=True)
class Match:
    route: RouteSpec
    path_parameters: dict[str, str]


def split_path(raw_path: str) -> list[str]:
    """Decoded segments of a raw (still percent-encoded) path; a trailing slash is ignored."""
    return [unquote(part) for part in raw_path.strip("/").split("/")] if raw_path.strip("/") else []


def _bind(template: list[str],
          segments: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
    """The route's specificity and path parameters, or None when it does not match."""
    rank: list[int] = []
    params: dict[str, str] = {}
    for index, part in enumerate(template):
        param = _PARAM.match(part)
        if param and param.group(2):  # {name+}: one or more remaining segments
            if index >= len(segments) or index != len(template) - 1:
                return None
            params[param.group(1)] = "/".join(segments[index:])
            return (*rank, 0), params
        if index >= len(segments):
            return None
        if param:
            params[param.group(1)] = segments[index]
            rank.append(1)
        elif part != segments[index]:
            return None
        else:
            rank.append(2)
    if len(segments) != len(template):
        return None
    return tuple(rank), params


class RouteTable:
    """The routes of the API, looked up by method and raw path."""

    def __init__(self, routes: Sequence[RouteSpec]) -> None:
        self.routes = list(routes)
        self._templates = [split_path(route.path) for route in self.routes]

    def match(self, method: str, raw_path: str) -> Match | None:
        segments = split_path(raw_path)
        best: tuple[tuple[int, ...], Match] | None = None
        for route, template in zip(self.routes, self._templates, strict=True):
            if route.method != method:
                continue
            bound = _bind(template, segments)
            if bound and (best is None or bound[0] > best[0]):
                best = (bound[0], Match(route, bound[1]))
        return best[1] if best else None
