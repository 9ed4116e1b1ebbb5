"""A tiny synthetic CCR dataset (tables + frozen features) with a learnable signal, for tests and smoke runs.

Every image has a latent vector ``z``; image features, captions, their "translations" and description
views are noisy linear maps of ``z`` (text features share one map, as a multilingual encoder would).
Test-split rows and target-language human captions are included on purpose, so tests can check that
training never reads them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ccr.data.tables import CAPTIONS_SCHEMA, IMAGES_SCHEMA
from ccr.features.store import fixed_grid, fixed_list, image_feature_schema, ragged_tokens, text_feature_schema
from ccr.io import write_table_atomic
from ccr.train.inputs import TrainInputs


def make_synthetic(root: Path | str, *, n_images: dict[str, int] | None = None, caps_per_image: int = 2,
                   views: int = 3, latent: int = 8, image_dim: int = 24, text_dim: int = 16, n_tokens: int = 4,
                   lang: str = "fr", with_mt: bool = True, noise: float = 0.5, seed: int = 0) -> TrainInputs:
    """Write a synthetic dataset under ``root`` and return its :class:`TrainInputs`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_images = n_images or {"train": 48, "val": 16, "test": 16}
    w_img = rng.normal(size=(latent, image_dim)) / np.sqrt(latent)
    w_txt = rng.normal(size=(latent, text_dim)) / np.sqrt(latent)

    images, caps, mts, descs = [], [], [], []
    img_ids, img_pooled, img_tok = [], [], []
    text_feats: dict[str, dict[str, list]] = {k: {"ids": [], "pooled": [], "tokens": []}
                                              for k in ("captions", "mt", "desc")}

    def text(z: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        n_words = int(rng.integers(3, 7))
        tok = (z @ w_txt)[None] + scale * rng.normal(size=(n_words, text_dim))
        pooled = tok.mean(0)
        return pooled / np.linalg.norm(pooled), tok

    def add_text(kind: str, cid: str, z: np.ndarray, scale: float) -> None:
        pooled, tok = text(z, scale)
        text_feats[kind]["ids"].append(cid)
        text_feats[kind]["pooled"].append(pooled)
        text_feats[kind]["tokens"].append(tok.astype(np.float32))

    for split, n in n_images.items():
        for i in range(n):
            iid = f"{split}{i:03d}"
            z = rng.normal(size=latent)
            images.append({"image_id": iid, "path": f"images/{iid}.jpg", "split": split})
            img_ids.append(iid)
            grid = (z @ w_img)[None] + noise * rng.normal(size=(max(n_tokens, 1), image_dim))
            img_tok.append(grid)
            img_pooled.append(grid.mean(0))
            for c in range(caps_per_image):
                cid = f"{iid}#en{c}"
                caps.append({"caption_id": cid, "image_id": iid, "lang": "en", "text": f"english caption {c} of {iid}",
                             "origin": "human", "split": split, "source_id": None})
                add_text("captions", cid, z, noise)
                if split == "test":  # target-language human references exist only on test
                    hid = f"{iid}#{lang}{c}"
                    caps.append({"caption_id": hid, "image_id": iid, "lang": lang, "text": f"ref {c} {iid}",
                                 "origin": "human", "split": split, "source_id": None})
                    add_text("captions", hid, z, noise)
                elif with_mt:
                    mid = f"{cid}#mt-{lang}"
                    mts.append({"caption_id": mid, "image_id": iid, "lang": lang, "text": f"mt {c} {iid}",
                                "origin": "mt", "split": split, "source_id": cid})
                    add_text("mt", mid, z, 1.5 * noise)
            for k in range(views):
                did = f"{iid}#desc{k}"
                descs.append({"caption_id": did, "image_id": iid, "lang": "en", "text": f"view {k} of {iid}",
                              "origin": "description", "split": split, "source_id": None})
                add_text("desc", did, z, noise)

    write_table_atomic(pa.Table.from_pylist(images, schema=IMAGES_SCHEMA), root / "images.parquet")
    write_table_atomic(pa.Table.from_pylist(caps, schema=CAPTIONS_SCHEMA), root / "captions.parquet")
    write_table_atomic(pa.Table.from_pylist(mts, schema=CAPTIONS_SCHEMA), root / f"mt-{lang}.parquet")
    write_table_atomic(pa.Table.from_pylist(descs, schema=CAPTIONS_SCHEMA), root / "descriptions.parquet")
    columns = [pa.array(img_ids, pa.string()), fixed_list(np.array(img_pooled))]
    if n_tokens:  # n_tokens=0: an encoder without a token grid (pooled vectors only)
        columns.append(fixed_grid(np.array(img_tok)))
    img_table = pa.Table.from_arrays(columns, schema=image_feature_schema(image_dim, n_tokens or None,
                                                                          {"name": "synthetic"}))
    write_table_atomic(img_table, root / "image_features.parquet")
    names = {"captions": "caption_features", "mt": "translation_features", "desc": "description_features"}
    for kind, f in text_feats.items():
        pooled = np.array(f["pooled"], np.float32).reshape(-1, text_dim)
        table = pa.Table.from_arrays(
            [pa.array(f["ids"], pa.string()), fixed_list(pooled), ragged_tokens(f["tokens"], text_dim)],
            schema=text_feature_schema(text_dim, text_dim, {"name": "synthetic"}))
        write_table_atomic(table, root / f"{names[kind]}.parquet")
    return TrainInputs(images=root / "images.parquet", captions=root / "captions.parquet",
                       translations=root / f"mt-{lang}.parquet", descriptions=root / "descriptions.parquet",
                       image_features=root / "image_features.parquet",
                       caption_features=root / "caption_features.parquet",
                       translation_features=root / "translation_features.parquet",
                       description_features=root / "description_features.parquet", lang=lang)
