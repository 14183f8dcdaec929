"""``facebench serve``'s web application (Starlette): the read-only leaderboard over a results store.

Every request opens the store through :func:`open_store` and closes it at the end: the endpoints are sync
(Starlette runs them on its thread pool) and an SQLite connection must stay on the thread that opened it;
opening is cheap next to rendering a page. The app never writes the store: only GET (and HEAD) routes are
served, unless a submission service is given, whose own routes are added as they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from facebench.errors import FacebenchError
from facebench.paths import dumps_json, write_atomic
from facebench.protocol import Protocol, builtin_protocols, load_protocol_file
from facebench.report.leaderboard import leaderboard_rows
from facebench.results.database import SQLITE, parse_location
from facebench.results.store import Store
from facebench.serve import pages
from facebench.serve.figures import FigureCache
from facebench.serve.html import esc
from facebench.serve.pages import NotFound, Site


def open_store(store: str) -> Store:
    """The results store named by ``store`` (a path or a database URL), opened read-only: the one place the
    server opens one."""
    return Store(store, read_only=True)


def load_protocols(protocols_dir: str | Path | None) -> dict[str, Protocol]:
    """The built-in protocols, and the ``*.toml`` protocol files in ``protocols_dir`` (so their runs are
    checked for staleness like the built-in ones)."""
    protocols = builtin_protocols()
    if protocols_dir is not None:
        for path in sorted(Path(protocols_dir).glob("*.toml")):
            protocol = load_protocol_file(path)
            protocols[protocol.id] = protocol
    return protocols


def _file_identity(store: str) -> tuple[int, int] | None:
    """An SQLite store's (device, inode): a new file put in its place is a new store to open (a copy renamed
    over it, a restore); None for a server's database, or no file."""
    dialect, target = parse_location(store)
    if dialect != SQLITE:
        return None
    try:
        info = os.stat(target)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class StoreUnavailable(Exception):
    """The store cannot be opened (missing, not a store, corrupt): a 503 page naming the problem."""


def _error_page(site: Site, title: str, message: str, status: int) -> HTMLResponse:
    body = f'<h1>{esc(title)}</h1><p>{esc(message)}</p><p><a href="/">The leaderboard</a></p>'
    return HTMLResponse(site.page(title, body), status_code=status)


def create_app(store: str, *, protocols_dir: str | None = None, cache_dir: str | Path | None = None,
               submissions=None, roots: dict[str, Path] | None = None) -> Starlette:
    """The web leaderboard over ``store`` (see the module docstring). ``cache_dir``: where figures are cached
    (default: a temporary folder of this app). ``submissions``: a service with ``routes()``, ``start()`` and
    ``stop()``, whose routes are served beside the leaderboard's (and its link shown). ``roots``: dataset name ->
    its copy here, so run pages draw the error gallery's crops (embedded datasets need none)."""
    store = str(store)
    protocols = load_protocols(protocols_dir)
    owned_cache = None
    if cache_dir is None:
        owned_cache = tempfile.TemporaryDirectory(prefix="facebench-serve-")
        cache_dir = owned_cache.name
    site = Site(protocols=protocols, figures=FigureCache(cache_dir), submissions=submissions is not None,
                roots=dict(roots or {}))

    local = threading.local()  # each worker thread keeps its own connection (SQLite's may not cross threads)

    @contextlib.contextmanager
    def reading() -> Iterator[Store]:
        """The thread's store, opened on its first request and kept (opening costs a connection and the
        catalogue: 5 ms on PostgreSQL); opened again when the file was replaced, or after any error."""
        db, identity = getattr(local, "store", None), _file_identity(store)
        if db is not None and identity != local.identity:
            db.close()
            db = None
        if db is None:
            try:
                db = open_store(store)
            except (FacebenchError, OSError) as exc:
                raise StoreUnavailable(str(exc)) from exc
            local.store, local.identity = db, identity
        try:
            yield db
        except NotFound:
            raise
        except BaseException:  # the connection may be the cause (a server restarted, a file damaged)
            local.store = None
            db.close()
            raise

    def html_endpoint(render: Callable[[Store, Request], str]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            try:
                with reading() as db:
                    return HTMLResponse(render(db, request))
            except NotFound as exc:
                return _error_page(site, "Not found", str(exc), 404)
            except StoreUnavailable as exc:
                return _error_page(site, "Results store unavailable", f"The results store cannot be read: {exc}", 503)
        return endpoint

    def query(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    def figure(request: Request) -> Response:
        pid, kind = request.path_params["protocol"], request.path_params["kind"]
        protocol = protocols.get(pid)
        try:
            with reading() as opened:
                db = pages.reads(opened)
                if protocol is None:
                    raise NotFound(f"no protocol {pid!r}")
                for _ in range(3):  # an older key's file may be removed between finding and reading it
                    _, png = site.figures.resolve(db, protocol, kind, rows_for=lambda: leaderboard_rows(
                        db, pid, protocols=protocols))
                    if png is None:
                        raise NotFound(f"protocol {pid!r} has no {kind} figure")
                    try:
                        return Response(png.read_bytes(), media_type="image/png",
                                        headers={"Cache-Control": "no-cache"})
                    except FileNotFoundError:
                        continue
                raise StoreUnavailable("the figure kept changing while it was read")
        except NotFound as exc:
            return _error_page(site, "Not found", str(exc), 404)
        except StoreUnavailable as exc:
            return _error_page(site, "Results store unavailable", str(exc), 503)

    def face(request: Request) -> Response:
        """A run's n-th worst face, drawn once and kept under the cache (named by the run and when it finished,
        so a run scored again is drawn again)."""
        key, n = request.path_params["key"], request.path_params["n"]
        try:
            with reading() as db:
                run = db.get_run(key)
                if run is None:
                    raise NotFound(f"no run {key!r} in the store")
                name = hashlib.sha1(f"{run.key} {run.finished!r} {n}".encode()).hexdigest()[:20]
                path = Path(site.figures.folder) / "faces" / f"{name}.png"
                if not path.exists():
                    png = pages.face_crop(db, site, run.key, n)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(path, png)
                return Response(path.read_bytes(), media_type="image/png")
        except NotFound as exc:
            return _error_page(site, "Not found", str(exc), 404)
        except StoreUnavailable as exc:
            return _error_page(site, "Results store unavailable", str(exc), 503)
        except OSError as exc:  # an image unreadable or gone from the dataset's copy: that face only
            return _error_page(site, "Not found", f"the face could not be drawn: {exc}", 404)

    def api(request: Request) -> Response:
        try:
            with reading() as db:
                return Response(pages.leaderboard_json(db, site, query(request)), media_type="application/json")
        except NotFound as exc:
            return Response(dumps_json({"error": str(exc)}), status_code=404, media_type="application/json")
        except StoreUnavailable as exc:
            return Response(dumps_json({"error": f"the results store cannot be read: {exc}"}),
                            status_code=503, media_type="application/json")

    routes: list[BaseRoute] = [
        Route("/", html_endpoint(lambda db, r: pages.index(db, site, query(r))), methods=["GET"]),
        Route("/protocol/{pid:str}",
              html_endpoint(lambda db, r: pages.protocol_page(db, site, r.path_params["pid"], query(r))),
              methods=["GET"]),
        Route("/models", html_endpoint(lambda db, r: pages.models_page(db, site)), methods=["GET"]),
        Route("/model/{name:path}", html_endpoint(lambda db, r: pages.model_page(db, site, r.path_params["name"])),
              methods=["GET"]),
        Route("/run/{key:str}", html_endpoint(lambda db, r: pages.run_page(db, site, r.path_params["key"])),
              methods=["GET"]),
        Route("/figure/{protocol:str}/{kind:str}.png", figure, methods=["GET"]),
        Route("/run/{key:str}/face/{n:int}.png", face, methods=["GET"]),
        Route("/api/leaderboard.json", api, methods=["GET"]),
    ]
    if submissions is not None:
        routes += list(submissions.routes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if submissions is not None:
            submissions.start()
        try:
            yield
        finally:
            if submissions is not None:
                submissions.stop()
            if owned_cache is not None:
                owned_cache.cleanup()

    async def not_found(request: Request, exc: Any) -> Response:
        return _error_page(site, "Not found", f"nothing at {request.url.path}", 404)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    app.state.site = site
    return app
