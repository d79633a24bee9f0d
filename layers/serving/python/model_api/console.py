"""The console's static files and the API's OpenAPI document, as the server function serves them
from its console layer (`$CONSOLE_DIR`, /opt/console; built by `build-ConsoleLayer`).

`GET /` is the console (static/index.html), `GET /docs` Swagger UI (static/docs.html),
`GET /static/{asset}` one of the files in static/ (our script and style sheet, the vendored
Chart.js and Swagger UI), `GET /openapi.json` docs/openapi.json as built. The files carry no
data: everything a page shows it asks the API for, from the browser, with the caller's key.
Only names found in static/ are served (no path from the request reaches the file
system), gzip-compressed when the client accepts it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from model_api.errors import NotFound, NotReady, echoed

logger = logging.getLogger(__name__)

DEFAULT_CONSOLE_DIR = "/opt/console"
PAGES = {"console": "index.html", "docs": "docs.html"}
OPENAPI_FILE = "openapi.json"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json",
                 ".svg": "image/svg+xml", ".png": "image/png"}
# The files change only with a deployment; a browser may keep them this long (seconds).
CACHE_CONTROL = "public, max-age=300"
# The pages load only their own scripts and styles and call only this API (no CDN, no inline
# script). Swagger UI needs inline styles and data: images (its icons).
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; "
                           "style-src 'self' 'unsafe-inline'; object-src 'none'; "
                           "base-uri 'self'; frame-ancestors 'none'")


@dataclass(frozen=True)
class StaticFile:
    """One file to answer with: its bytes and Content-Type."""

    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


class Console:
    """The console layer's files: listed on first use (a model function, which has no console
    layer, never looks), read per request from the layer."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @cached_property
    def assets(self) -> dict[str, Path]:
        """static/'s files by name: the only names `asset` serves."""
        static = self.folder / "static"
        try:
            return {path.name: path for path in static.iterdir()
                    if path.is_file() and path.suffix in CONTENT_TYPES}
        except OSError as exc:
            logger.error("console: cannot list %s (%s): the console routes answer 503", static,
                         exc)
            return {}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Console:
        return cls(Path(environ.get("CONSOLE_DIR") or DEFAULT_CONSOLE_DIR))

    def page(self, name: str) -> StaticFile:
        """The HTML page `name` ("console" or "docs"); 503 when the layer lacks it."""
        return self._read(self.assets.get(PAGES[name]), PAGES[name])

    def asset(self, name: str) -> StaticFile:
        """static/`name`; 404 for a name that is not one of its files."""
        if name not in self.assets:
            raise NotFound(f"no static file {echoed(name)}; the console serves "
                           f"{', '.join(sorted(self.assets)) or 'none (no console layer)'}")
        return self._read(self.assets[name], name)

    def openapi(self) -> StaticFile:
        """docs/openapi.json as the layer was built with it."""
        return self._read(self.folder / OPENAPI_FILE, OPENAPI_FILE)

    def _read(self, path: Path | None, name: str) -> StaticFile:
        try:
            if path is None:
                raise FileNotFoundError(name)
            body = path.read_bytes()
        except OSError as exc:
            logger.error("console: cannot read %s: %s", name, exc)
            raise NotReady(f"the console's {name} is not installed: was the console layer "
                           "built (`make build`)?") from exc
        headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        if path.suffix == ".html":
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return StaticFile(body, CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
                          headers)
