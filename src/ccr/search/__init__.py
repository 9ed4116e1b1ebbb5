"""Search indexes for serving top-k over gallery embeddings (exact, IVF, HNSW): see :mod:`ccr.search.ann`."""

from ccr.search.ann import KINDS, add, build_index, index_kind, index_params, load_index, save_index, search

__all__ = ["KINDS", "add", "build_index", "index_kind", "index_params", "load_index", "save_index", "search"]
