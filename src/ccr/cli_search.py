"""``ccr index``, ``ccr search`` and ``ccr serve``: search your own images with a trained model bundle.

The parsers are built here without heavy imports (``ccr results`` stays fast); torch, FAISS and the
encoders load when one of these commands runs.  Usage and formats: docs/search.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

KINDS = ("exact", "ivf", "hnsw")
log = logging.getLogger("ccr.search")


LANG_HELP = ("the queries' language code (e.g. cs): encoded as the evaluation encoded that language (a concat "
             "encoder's part without it left out; the bundle's language centering, if it has one); default: unknown")


def _index_param(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER, got {text!r}")
    try:
        return name, int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"index param {name!r}: {value!r} is not an integer") from None


def _setup(args: argparse.Namespace) -> None:
    from ccr.io import setup_logging

    setup_logging(getattr(args, "log", None), level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build loaded: noise here
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)


def _fail(command: str, err: Exception) -> int:
    print(f"ccr {command}: {err}", file=sys.stderr)
    return 2


def _usage_errors() -> tuple[type[Exception], ...]:
    from ccr.models.checkpoint import CheckpointError
    from ccr.search.bundle import BundleError

    return (BundleError, CheckpointError, ValueError, FileNotFoundError)


def cmd_index(args: argparse.Namespace) -> int:
    _setup(args)
    from ccr.search.gallery import index_images

    try:
        run = index_images(args.model, args.images, args.out, kind=args.kind, params=dict(args.param or []) or None,
                           add=args.add, shard_size=args.shard_size)
    except _usage_errors() as err:
        return _fail("index", err)
    print(f"{run.folder}: added {run.added} image(s), skipped {run.skipped} unreadable, {run.already} already "
          f"indexed; the index holds {run.rows} image(s)")
    for path, why in run.skipped_files:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    return 0


def _read_queries(args: argparse.Namespace) -> list[str]:
    queries = list(args.query or [])
    if args.queries:
        path = Path(args.queries)
        if not path.is_file():
            raise FileNotFoundError(f"--queries: no such file: {path}")
        queries += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return queries


def cmd_search(args: argparse.Namespace) -> int:
    _setup(args)
    from ccr.search import gallery, render

    try:
        if args.image:
            return _search_captions(args)
        if not args.index:
            raise ValueError("--index is required for text queries (make one with `ccr index`)")
        queries = _read_queries(args)
        if not queries:
            raise ValueError("no query: give one or more queries, or --queries FILE (one per line)")
        index, bundle = gallery.open_index(args.index, args.model)
        hits = index.search(bundle.embed_texts(queries, [args.lang] * len(queries) if args.lang else None), args.k)
    except _usage_errors() as err:
        return _fail("search", err)
    if args.json:
        print(json.dumps([render.hits_records(q, h) for q, h in zip(queries, hits, strict=True)], indent=2,
                         ensure_ascii=False))
    else:
        print("\n\n".join(render.hits_table(q, h) for q, h in zip(queries, hits, strict=True)))
    if args.html:
        _write_html(args.html, f"ccr search: {index.folder}", queries, hits)
    return 0


def _write_html(path: str, title: str, queries: list[str], hits: list[Any]) -> None:
    from ccr.io import write_text_atomic
    from ccr.report.html import Thumbnails, page
    from ccr.search import render

    thumbs = Thumbnails(px=160)  # base64 JPEG thumbnails: the page is one self-contained file
    body = f"<style>{render.CSS}</style>\n" + "\n".join(
        render.hits_html(q, h, lambda hit: thumbs.data_uri(hit.path)) for q, h in zip(queries, hits, strict=True))
    write_text_atomic(page(title, body), path)
    print(f"wrote {path}", file=sys.stderr)


def _search_captions(args: argparse.Namespace) -> int:
    from ccr.search import gallery, render
    from ccr.search.bundle import load_bundle

    if not args.captions:
        raise ValueError("--image needs --captions CORPUS (a .txt file, one caption per line, or a table with a "
                         "'text' column) to search")
    if args.query or args.queries:
        raise ValueError("give either text queries or --image, not both")
    if args.index:
        _, bundle = gallery.open_index(args.index, args.model)
    elif args.model:
        bundle = load_bundle(args.model)
    else:
        raise ValueError("--image needs --index (its bundle is used) or --model")
    captions = gallery.read_captions_corpus(args.captions)
    results = gallery.search_captions(bundle, args.image, captions, args.k)
    if args.json:
        print(json.dumps([{"image": str(Path(img).resolve()), "results": r}
                          for img, r in zip(args.image, results, strict=True)], indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(render.captions_table(img, r) for img, r in zip(args.image, results, strict=True)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    _setup(args)
    from ccr.search import gallery
    from ccr.search.serve import serve

    try:
        index, bundle = gallery.open_index(args.index, args.model)
    except _usage_errors() as err:
        return _fail("serve", err)
    serve(index, bundle, port=args.port, k=args.k, lang=args.lang)
    return 0


def add_search_commands(sub: Any) -> None:
    """The ``index``, ``search`` and ``serve`` sub-commands of ``ccr``."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and FAISS (default: theirs)")
        p.add_argument("--log", help="also write the log to this file")
        p.add_argument("--quiet", action="store_true", help="log warnings and errors only")

    idx = sub.add_parser(
        "index", help="embed a folder or manifest of images with a model bundle into a search index",
        description="Embeds every image of a folder (recursively) or a manifest (CSV/JSONL/Parquet with a 'path' "
                    "column) with the bundle's image side, in shards that resume after a crash, and writes a FAISS "
                    "index plus a Parquet table of paths into --out. Unreadable images are skipped, logged and "
                    "counted.")
    idx.add_argument("--model", required=True, help="the model bundle (bundle.pt, exported by the workflow)")
    idx.add_argument("--images", required=True, help="a folder of images, or a manifest with a 'path' column")
    idx.add_argument("--out", required=True, help="the index folder")
    idx.add_argument("--kind", choices=KINDS, default=None,
                     help="exact (default: brute force), or approximate: ivf or hnsw (see docs/search.md)")
    idx.add_argument("--param", action="append", type=_index_param, metavar="NAME=INT",
                     help="an index param, e.g. M=32 or nlist=256 (repeatable)")
    idx.add_argument("--add", action="store_true", help="append the images not yet indexed to an existing index")
    idx.add_argument("--shard-size", type=int, default=64, help="images per resumable shard (default 64)")
    common(idx)
    idx.set_defaults(func=cmd_index)

    srch = sub.add_parser(
        "search", help="search an index with text queries (or captions with an image)",
        description="Ranked images for each text query (any language the bundle's text encoder handles), or with "
                    "--image and --captions the best captions of a corpus for an image.")
    srch.add_argument("query", nargs="*", help="text queries")
    srch.add_argument("--index", help="the index folder (made by `ccr index`)")
    srch.add_argument("--model", help="the bundle (default: the one recorded in the index; another is refused)")
    srch.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    srch.add_argument("--queries", help="a file of queries, one per line")
    srch.add_argument("--lang", help=LANG_HELP)
    srch.add_argument("--json", action="store_true", help="print JSON instead of a table")
    srch.add_argument("--html", help="also write the results with thumbnails to this self-contained HTML file")
    srch.add_argument("--image", action="append", help="image -> text: an image file (repeatable)")
    srch.add_argument("--captions", help="image -> text: the caption corpus (.txt one per line, or .csv/.jsonl/"
                                         ".parquet with a 'text' column)")
    common(srch)
    srch.set_defaults(func=cmd_search)

    srv = sub.add_parser("serve", help="a local search page for an index (http://127.0.0.1:PORT)",
                         description="Serves a search page (query box, thumbnails, scores) on 127.0.0.1 only.")
    srv.add_argument("--index", required=True, help="the index folder (made by `ccr index`)")
    srv.add_argument("--model", help="the bundle (default: the one recorded in the index)")
    srv.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    srv.add_argument("-k", type=int, default=20, help="results per query on the page (default 20)")
    srv.add_argument("--lang", help=LANG_HELP)
    common(srv)
    srv.set_defaults(func=cmd_serve)
