"""Search results as text, JSON-ready records and HTML (the ``ccr search --html`` file and the ``ccr serve`` page)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from ccr.search.gallery import Hit

CSS = """
.results { display: flex; flex-wrap: wrap; gap: 10px; margin: 0.5em 0 1.5em; }
figure.hit { margin: 0; width: 168px; font-size: 0.8em; text-align: center; }
figure.hit img.thumb { width: 160px; height: 160px; object-fit: cover; border: 3px solid #ddd; display: block; }
figure.hit figcaption { overflow-wrap: anywhere; color: #444; }
.score { font-weight: 600; color: #1a5fb4; }
form.query input[type=text] { width: 28em; font-size: 1.1em; padding: 4px; }
form.query input[type=number] { width: 4em; }
"""


def hits_records(query: str, hits: Sequence[Hit]) -> dict[str, Any]:
    """One query's results as plain JSON: ``{"query", "results": [{"rank", "score", "path"}]}``."""
    return {"query": query, "results": [{"rank": h.rank, "score": round(h.score, 6), "path": h.path} for h in hits]}


def hits_table(query: str, hits: Sequence[Hit]) -> str:
    """One query's results as an aligned text table (rank, score, path)."""
    rows = [(str(h.rank), f"{h.score:.4f}", h.path) for h in hits]
    width = [max([len(head)] + [len(r[i]) for r in rows]) for i, head in enumerate(("rank", "score"))]
    lines = [f"query: {query}", f"{'rank'.rjust(width[0])}  {'score'.rjust(width[1])}  path"]
    lines += [f"{r.rjust(width[0])}  {s.rjust(width[1])}  {p}" for r, s, p in rows]
    return "\n".join(lines)


def hits_html(query: str, hits: Sequence[Hit], thumb_src: Callable[[Hit], str | None]) -> str:
    """One query's results as a row of thumbnails with rank, score and file name."""
    figures = []
    for h in hits:
        src = thumb_src(h)
        name = Path(h.path).name
        img = (f'<img class="thumb" src="{escape(src)}" alt="{escape(name)}" title="{escape(h.path)}" '
               f'data-path="{escape(h.path)}" data-rank="{h.rank}">' if src
               else f'<div class="thumb missing" data-path="{escape(h.path)}">unreadable</div>')
        figures.append(f'<figure class="hit">{img}<figcaption>{h.rank}. <span class="score">{h.score:.3f}</span>'
                       f"<br>{escape(name)}</figcaption></figure>")
    return (f'<h2 class="query">“{escape(query)}”</h2>\n<div class="results" data-query="{escape(query)}">'
            + "".join(figures) + "</div>")


def captions_table(image: str, results: Sequence[dict[str, Any]]) -> str:
    """Image -> text results as a text table (rank, score, caption)."""
    lines = [f"image: {image}", "rank    score  caption"]
    lines += [f"{r['rank']:>4}  {r['score']:>7.4f}  {r['text']}" for r in results]
    return "\n".join(lines)
