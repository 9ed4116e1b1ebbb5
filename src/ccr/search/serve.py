"""``ccr serve``: a local search page over an index folder (Starlette app, uvicorn server, 127.0.0.1 only).

Routes:

* ``GET /?q=...&k=...``: the page, a query box and, for a query, the ranked thumbnails with scores;
* ``GET /api/search?q=...&k=...``: the same results as JSON (``ccr search --json``'s shape);
* ``GET /thumb/{row}``: a JPEG thumbnail of index row ``row``; ``GET /image/{row}``: that image file.

Images are addressed by their row in the index, never by a path: the app can only ever read files
the index holds (a path in a URL, ``../`` or otherwise, matches no route).
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from html import escape
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ccr.search.bundle import Bundle
from ccr.search.gallery import Hit, ImageIndex
from ccr.search.render import CSS, hits_html, hits_records

log = logging.getLogger("ccr.search")

HOST = "127.0.0.1"
THUMB_PX = 160
THUMB_CACHE = 512
MAX_K = 100
MAX_QUERY_CHARS = 500

PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.note { color: #666; font-size: 0.85em; }
.error { color: #b00020; }
"""


class Searcher:
    """Query embedding and search behind one lock (encoders are not guaranteed thread-safe)."""

    def __init__(self, index: ImageIndex, bundle: Bundle, k: int, lang: str | None = None):
        index.check_bundle(bundle)
        self.index, self.bundle, self.k, self.lang = index, bundle, k, lang
        self._lock = threading.Lock()
        self._thumbs: OrderedDict[int, bytes | None] = OrderedDict()
        self._thumb_lock = threading.Lock()

    def search(self, query: str, k: int) -> list[Hit]:
        with self._lock:
            return self.index.search(self.bundle.embed_texts([query], [self.lang] if self.lang else None), k)[0]

    def thumbnail(self, row: int) -> bytes | None:
        """JPEG bytes of index row ``row`` (None when the file cannot be read now); LRU-cached."""
        with self._thumb_lock:
            if row in self._thumbs:
                self._thumbs.move_to_end(row)
                return self._thumbs[row]
        path = self.index.paths[row]
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((THUMB_PX, THUMB_PX))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
                data: bytes | None = buf.getvalue()
        except (OSError, UnidentifiedImageError) as err:
            log.warning("serve: cannot read image %s (%s)", path, err)
            data = None
        with self._thumb_lock:
            self._thumbs[row] = data
            while len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return data


def _query_args(request: Request, default_k: int) -> tuple[str, int]:
    query = request.query_params.get("q", "").strip()[:MAX_QUERY_CHARS]
    try:
        k = int(request.query_params.get("k", default_k))
    except ValueError:
        k = default_k
    return query, max(1, min(k, MAX_K))


def _row(request: Request, searcher: Searcher) -> int | None:
    row = request.path_params["row"]  # an int: the route's convertor accepts digits only
    return row if 0 <= row < len(searcher.index.paths) else None


def create_app(index: ImageIndex, bundle: Bundle, k: int = 20, lang: str | None = None) -> Starlette:
    """The search app over ``index`` with its ``bundle`` (queries in ``lang`` when given)."""
    searcher = Searcher(index, bundle, k, lang)
    info = bundle.summary()

    def home(request: Request) -> HTMLResponse:
        query, kk = _query_args(request, searcher.k)
        results, error = "", ""
        if query:
            try:
                hits = searcher.search(query, kk)
                results = hits_html(query, hits, lambda h: f"/thumb/{h.row}")
            except ValueError as err:
                error = f'<p class="error">{escape(str(err))}</p>'
        body = (
            f"<h1>Search {len(index.paths)} images</h1>"
            f'<form class="query" method="get" action="/">'
            f'<input type="text" id="q" name="q" value="{escape(query)}" placeholder="une femme sur un vélo" '
            f'autofocus> <label>k <input type="number" id="k" name="k" value="{kk}" min="1" max="{MAX_K}"></label> '
            f'<button type="submit" id="go">Search</button></form>'
            f'<p class="note">model {escape(Path(info["path"]).name)} ({escape(info["checksum"][:19])}…), '
            f'text encoder {escape(info["text_encoder"])}, trained for {escape(", ".join(info["query_languages"]))}; '
            f"index {escape(str(index.folder))} ({escape(index.meta['kind'])})</p>"
            f"{error}{results}"
        )
        title = f"ccr search: {query}" if query else "ccr search"
        return HTMLResponse(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
                            f"</title><style>{PAGE_CSS}{CSS}</style></head><body>{body}</body></html>\n")

    def api_search(request: Request) -> JSONResponse:
        query, kk = _query_args(request, searcher.k)
        if not query:
            return JSONResponse({"error": "parameter 'q' is empty"}, status_code=400)
        return JSONResponse([hits_records(query, searcher.search(query, kk))])

    def thumb(request: Request) -> Response:
        row = _row(request, searcher)
        data = None if row is None else searcher.thumbnail(row)
        if data is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def image(request: Request) -> Response:
        row = _row(request, searcher)
        if row is None or not Path(index.paths[row]).is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(index.paths[row])

    routes = [Route("/", home), Route("/api/search", api_search), Route("/thumb/{row:int}", thumb),
              Route("/image/{row:int}", image)]
    return Starlette(routes=routes)


def serve(index: ImageIndex, bundle: Bundle, port: int = 8000, k: int = 20, lang: str | None = None) -> None:
    """Run the app on http://127.0.0.1:``port`` until interrupted."""
    import uvicorn

    app = create_app(index, bundle, k, lang)
    bundle.load_encoders(images=False)  # the text encoder loads now, not on the first query
    print(f"ccr serve: http://{HOST}:{port}/ ({len(index.paths)} images, Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=HOST, port=port, log_level="info")
