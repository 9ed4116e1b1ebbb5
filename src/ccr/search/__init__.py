"""Search: top-k indexes over gallery embeddings (:mod:`ccr.search.ann`), trained students as model
bundles (:mod:`ccr.search.bundle`), and your own images indexed and searched with a bundle
(:mod:`ccr.search.gallery`; ``ccr index`` / ``ccr search`` / ``ccr serve``, docs/search.md)."""

from ccr.search.ann import KINDS, add, build_index, index_kind, index_params, load_index, save_index, search
from ccr.search.bundle import Bundle, BundleError, export_bundle, load_bundle

__all__ = ["KINDS", "Bundle", "BundleError", "add", "build_index", "export_bundle", "index_kind", "index_params",
           "load_bundle", "load_index", "save_index", "search"]
