"""The board's web server: routes to ginlab.board.data, the page's assets, and the access rules.

- Every request is checked against ginlab.board.access (the Host of a loopback board, the token of any other).
- Paths in requests are names relative to the results root (ginlab.board.paths).
- It only reads: no route writes anything, and the runs-table cache goes to `.ginlab-cache/`.
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ginlab.board.access import COOKIE, refusal
from ginlab.board.assets import VENDOR, asset_path
from ginlab.board.export import export_html
from ginlab.board.paths import BoardError, OutsideRootError

if TYPE_CHECKING:  # not imported to serve: the data layer loads in a thread while the page is served
    from ginlab.board.data import Board
    from ginlab.board.starting import StartingBoard

logger = logging.getLogger(__name__)

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}


def build_app(board: Board | StartingBoard, token: str | None = None, loopback: bool = True) -> Starlette:
    """The ASGI app serving `board`.

    Args:
        board: the data: a Board, or a StartingBoard that answers what it can while its Board loads.
        token: when given, every request must carry it (for a board bound to a non-loopback address).
        loopback: the server is bound to a loopback address: check the Host header.
    """

    def page(request: Request) -> Response:
        index = asset_path("index.html").read_text(encoding="utf-8")
        response = HTMLResponse(index.replace("{{root}}", html.escape(board.root)))
        if token and request.query_params.get("token") == token:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        path = asset_path(name)
        if path is None or not path.is_file():
            return _error(404, f"no asset {name!r}")
        # The npm files are pinned (package-lock.json): the browser may keep them a day, and so skips
        # downloading and compiling 2 MB of script on the next visit. The board's own files are revalidated.
        cache = "max-age=86400" if name in VENDOR else "no-cache"
        return FileResponse(path, media_type=CONTENT_TYPES.get(path.suffix), headers={"Cache-Control": cache})

    def meta(request: Request) -> Response:
        return JSONResponse(board.meta())

    def runs(request: Request) -> Response:
        params = request.query_params
        return JSONResponse(board.runs(params, int(params.get("start", 0)), int(params.get("end", 200))))

    async def curves(request: Request) -> Response:
        body = await request.json()
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object: {runs, groups, metric, x, view}")
        view = body.get("view") or {}
        result = await _in_thread(
            board.curves,
            view,
            [str(r) for r in body.get("runs") or []],
            [str(g) for g in body.get("groups") or []],
            str(body.get("metric") or ""),
            str(body.get("x") or "epoch"),
        )
        return JSONResponse(result)

    def run(request: Request) -> Response:
        params = request.query_params
        return JSONResponse(board.run_page(_required(params, "name"), params.get("compare") or None))

    def log(request: Request) -> Response:
        params = request.query_params
        offset = params.get("offset")
        return JSONResponse(board.log(_required(params, "name"), int(offset) if offset else None))

    def experiments(request: Request) -> Response:
        return JSONResponse(board.experiments())

    def file(request: Request) -> Response:
        return FileResponse(board.file(_required(request.query_params, "path")))

    def changes(request: Request) -> Response:
        return JSONResponse(board.changes(int(request.query_params.get("since", 0))))

    def export(request: Request) -> Response:
        state = request.url.query
        state = "&".join(p for p in state.split("&") if not p.startswith("token="))
        document = export_html(board.loaded(), state)
        return HTMLResponse(
            document, headers={"Content-Disposition": 'attachment; filename="board-view.html"'}
        )

    routes = [
        Route("/", page),
        Route("/assets/{name}", asset),
        Route("/api/meta", meta),
        Route("/api/runs", runs),
        Route("/api/curves", curves, methods=["POST"]),
        Route("/api/run", run),
        Route("/api/log", log),
        Route("/api/experiments", experiments),
        Route("/api/file", file),
        Route("/api/changes", changes),
        Route("/api/export", export),
    ]
    middleware = [
        Middleware(AccessRules, token=token, loopback=loopback),
        Middleware(GZipMiddleware, minimum_size=2000),
    ]
    exception_handlers = {
        OutsideRootError: lambda request, error: _error(403, str(error)),
        # A filter expression that cannot be evaluated (ExpressionError) is a 400 as well.
        BoardError: lambda request, error: _error(404 if str(error).startswith("no ") else 400, str(error)),
        ValueError: lambda request, error: _error(400, f"bad request: {error}"),
    }
    return Starlette(routes=routes, middleware=middleware, exception_handlers=exception_handlers)


async def _in_thread(function, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


def _required(params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise BoardError(f"the request needs the parameter {name!r}")
    return value


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class AccessRules:
    """ASGI middleware: refuses a request that ginlab.board.access says must be refused."""

    def __init__(self, app, token: str | None, loopback: bool):
        self.app = app
        self.token = token
        self.loopback = loopback

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        problem = refusal(headers, query, self.token, self.loopback)
        if problem:
            status, message = problem
            await _error(status, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


__all__ = ["AccessRules", "build_app"]
