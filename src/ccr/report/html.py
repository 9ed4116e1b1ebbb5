"""Self-contained HTML (every image inlined as base64): the examples gallery and the one-page report."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from html import escape

import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from ccr.report.tables import REPLICATE_COLUMNS

log = logging.getLogger(__name__)

THUMB_PX = 96
EXAMPLE_COLUMNS = {"caption_id", "query_text", "true_image_id", "true_image_path", "true_rank",
                   "top_image_ids", "top_image_paths", "top_scores", "filename"}
# Tags that define *which* query is shown; the others (system...) are compared side by side.
QUERY_SCOPE = ("dataset", "lang")

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table.metrics { border-collapse: collapse; font-size: 0.9em; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
table.metrics th { background: #f0f0f0; }
.query { margin: 1em 0 1.6em; }
.query h4 { margin: 0.2em 0; font-weight: 600; }
table.ex td { vertical-align: top; padding: 2px 4px; font-size: 0.8em; text-align: center; }
table.ex td.label { text-align: left; max-width: 14em; }
.thumb { width: 96px; height: 96px; object-fit: cover; border: 3px solid transparent; display: block; }
.hit .thumb { border-color: #1a9e3a; }
.truth .thumb { border-color: #3a6fd8; }
.missing { width: 96px; height: 96px; background: #eee; font-size: 0.7em; overflow: hidden; display: flex;
           align-items: center; justify-content: center; border: 3px solid transparent; }
.hit .missing { border-color: #1a9e3a; }
img.plot { max-width: 100%; }
.note { color: #666; font-size: 0.85em; }
"""


class Thumbnails:
    """Base64 JPEG thumbnails, cached by path; unreadable images become a visible placeholder."""

    def __init__(self, px: int = THUMB_PX):
        self.px = px
        self._cache: dict[str, str | None] = {}

    def data_uri(self, path: str) -> str | None:
        if path not in self._cache:
            try:
                with Image.open(path) as im:
                    im = ImageOps.exif_transpose(im).convert("RGB")
                    im.thumbnail((self.px, self.px))
                    buf = io.BytesIO()
                    im.save(buf, format="JPEG", quality=80)
                self._cache[path] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
            except (OSError, UnidentifiedImageError) as err:
                log.warning("report: cannot read image %s (%s); shown as missing", path, err)
                self._cache[path] = None
        return self._cache[path]

    def html(self, path: str, title: str, css_class: str = "") -> str:
        uri = self.data_uri(path)
        inner = (f'<img class="thumb" src="{uri}" alt="{escape(title)}" title="{escape(title)}">' if uri
                 else f'<div class="missing" title="{escape(path)}">missing:<br>{escape(title)}</div>')
        return f'<td class="{css_class}">{inner}'


def png_img(png: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="metrics"><tr>{head}</tr>{body}</table>'


def _tag_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c not in EXAMPLE_COLUMNS]


def examples_fragment(examples: pa.Table | None, thumbs: Thumbnails, max_queries: int = 4) -> str:
    """Per dataset/lang, the first ``max_queries`` queries; per query one row per system (first seed/run)."""
    if examples is None or examples.num_rows == 0:
        return '<p class="note">No retrieval examples.</p>'
    tags = _tag_columns(examples)
    scope = [c for c in QUERY_SCOPE if c in tags]
    sort_rep = [c for c in REPLICATE_COLUMNS if c in tags]
    side = [c for c in tags if c not in scope and c not in sort_rep]

    def rep_key(rec: dict) -> tuple:
        return tuple((rec[c] is None, str(rec[c])) for c in sort_rep)

    # query -> system -> record of the first replicate; queries keep their order in the files.
    queries: dict[tuple, dict[tuple, dict]] = {}
    for rec in examples.to_pylist():
        qkey = (*[rec[c] for c in scope], rec["caption_id"])
        skey = tuple(rec[c] for c in side) if side else (rec.get("filename"),)
        best = queries.setdefault(qkey, {}).get(skey)
        if best is None or rep_key(rec) < rep_key(best):
            queries[qkey][skey] = rec
    shown: dict[tuple, int] = {}
    parts = ['<p class="note">Top-5 retrieved images per system; <span style="color:#1a9e3a">green</span> = the '
             'correct image, <span style="color:#3a6fd8">blue</span> = the query\'s true image (shown first).</p>']
    for qkey, systems in queries.items():
        scope_key = qkey[:-1]
        if shown.get(scope_key, 0) >= max_queries:
            continue
        shown[scope_key] = shown.get(scope_key, 0) + 1
        first = next(iter(systems.values()))
        where = " / ".join(str(v) for v in scope_key)
        parts.append(f'<div class="query"><h4>“{escape(first["query_text"])}”</h4>'
                     f'<div class="note">{escape(where)} · {escape(first["caption_id"])}</div><table class="ex">')
        for skey, rec in sorted(systems.items(), key=lambda kv: [str(v) for v in kv[0]]):
            label = " / ".join(str(v) for v in skey)
            cells = [f'<td class="label">{escape(label)}<br>true rank {rec["true_rank"]}</td>',
                     thumbs.html(rec["true_image_path"], rec["true_image_id"], "truth") + "<br>true</td>"]
            for iid, path, score in zip(rec["top_image_ids"], rec["top_image_paths"], rec["top_scores"], strict=True):
                css = "hit" if iid == rec["true_image_id"] else ""
                cells.append(thumbs.html(path, iid, css) + f"<br>{score:.3f}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table></div>")
    return "\n".join(parts)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n<h1>{escape(title)}</h1>\n{body}\n</body></html>\n")
