"""The evaluate stage on a tiny synthetic dataset with retrievers whose answer is known."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.evaluate import evaluate

N_TEST, N_TRAIN = 200, 10


@dataclass
class Inputs:
    images: Path
    captions: Path


def make_dataset(root: Path, n_test: int = N_TEST) -> Inputs:
    ids = [f"img{i:04d}" for i in range(n_test + N_TRAIN)]
    split = ["test"] * n_test + ["train"] * N_TRAIN
    pq.write_table(pa.table({"image_id": ids, "path": [f"images/{i}.jpg" for i in ids], "split": split}),
                   root / "images.parquet")
    rows = []
    for iid, sp in zip(ids, split, strict=True):
        for k in range(2):
            rows.append({"caption_id": f"{iid}#fr{k}", "image_id": iid, "lang": "fr", "text": f"une photo {iid} {k}",
                         "origin": "human", "split": sp, "source_id": None})
        rows.append({"caption_id": f"{iid}#en0", "image_id": iid, "lang": "en", "text": f"a photo {iid}",
                     "origin": "human", "split": sp, "source_id": None})
        rows.append({"caption_id": f"{iid}#mt-fr", "image_id": iid, "lang": "fr", "text": f"photo mt {iid}",
                     "origin": "mt", "split": sp, "source_id": f"{iid}#en0"})
    pq.write_table(pa.Table.from_pylist(rows), root / "captions.parquet")
    return Inputs(root / "images.parquet", root / "captions.parquet")


class IdentityRetriever:
    """One-hot embeddings: a caption embeds exactly as its image -> perfect retrieval."""

    def __init__(self, n: int):
        self.n = n
        self.calls: list[list[str]] = []

    def _onehot(self, image_ids):
        out = np.zeros((len(image_ids), self.n), dtype=np.float32)
        out[np.arange(len(image_ids)), [int(i[3:]) for i in image_ids]] = 1.0
        return out

    def embed_images(self, image_ids):
        return self._onehot(image_ids)

    def embed_texts(self, caption_ids):
        self.calls.append(list(caption_ids))
        return self._onehot([c.split("#")[0] for c in caption_ids])


class RandomRetriever:
    def __init__(self, seed: int, dim: int = 64):
        self.rng, self.dim = np.random.default_rng(seed), dim

    def embed_images(self, image_ids):
        return self.rng.normal(size=(len(image_ids), self.dim))

    def embed_texts(self, caption_ids):
        return self.rng.normal(size=(len(caption_ids), self.dim))


def test_identity_retriever_is_perfect_and_files_agree(tmp_path):
    inputs = make_dataset(tmp_path)
    ret = IdentityRetriever(N_TEST + N_TRAIN)
    tags = {"dataset": "toy", "system": "identity", "seed": 1, "run": "r0"}
    row = evaluate(ret, inputs, "fr", (1, 5, 10), tmp_path / "out", tags)
    # only human fr test captions were queried
    assert all(c.endswith(("#fr0", "#fr1")) and int(c[3:7]) < N_TEST for c in ret.calls[0])
    assert row["n_queries"] == 2 * N_TEST and row["n_images"] == N_TEST and row["lang"] == "fr"
    for key in ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "mr"):
        assert row[key] == 100.0
    assert row["t2i_medr"] == row["i2t_medr"] == 1.0

    table = pq.read_table(tmp_path / "out" / "metrics.parquet")
    assert table.num_rows == 1
    assert table.column_names[:6] == ["dataset", "system", "seed", "run", "split", "lang"]
    assert table.to_pylist()[0] == row
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == row

    ex = pq.read_table(tmp_path / "out" / "examples.parquet").to_pylist()
    assert len(ex) == 20 and len({e["true_image_id"] for e in ex}) == 20
    for e in ex:
        assert e["top_image_ids"][0] == e["true_image_id"] and e["true_rank"] == 1
        assert len(e["top_image_ids"]) == len(e["top_scores"]) == len(e["top_image_paths"]) == 5
        assert e["true_image_path"] == str(tmp_path / "images" / f"{e['true_image_id']}.jpg")
        assert e["query_text"].startswith("une photo") and e["system"] == "identity"
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_examples_are_the_same_queries_for_every_system(tmp_path):
    inputs = make_dataset(tmp_path, n_test=40)
    evaluate(IdentityRetriever(50), inputs, "fr", (1,), tmp_path / "a", {"system": "a", "seed": 1})
    evaluate(RandomRetriever(3), inputs, "fr", (1,), tmp_path / "b", {"system": "b", "seed": 2})
    a = pq.read_table(tmp_path / "a" / "examples.parquet")["caption_id"].to_pylist()
    b = pq.read_table(tmp_path / "b" / "examples.parquet")["caption_id"].to_pylist()
    assert a == b


def test_random_retriever_is_near_chance(tmp_path):
    inputs = make_dataset(tmp_path)
    row = evaluate(RandomRetriever(0), inputs, "fr", (1, 5, 10), tmp_path / "out", {"system": "random"})
    # chance: T2I R@10 = 10/200 = 5%; I2T (best of 2 captions among 400) R@10 ~ 1-(1-10/400)^2*... ~ 5%
    assert row["t2i_r1"] <= 3.0 and row["t2i_r10"] <= 12.0
    assert row["i2t_r1"] <= 3.0 and row["i2t_r10"] <= 15.0
    assert row["mr"] <= 10.0
    assert 75 <= row["t2i_meanr"] <= 126  # uniform ranks on 1..200: mean 100.5, s.e. ~ 3
    assert 70 <= row["t2i_medr"] <= 131
    assert row["t2i_r10"] >= 1.0 and row["i2t_r10"] >= 1.0  # not worse than chance either
    assert 105 <= row["i2t_meanr"] <= 165  # best of 2 captions among 400: ~ 134


def test_missing_language_names_lang_and_file(tmp_path):
    inputs = make_dataset(tmp_path, n_test=5)
    with pytest.raises(ValueError, match=r"captions\.parquet.*'de'"):
        evaluate(IdentityRetriever(15), inputs, "de", (1,), tmp_path / "out", {})
    assert not (tmp_path / "out" / "metrics.parquet").exists()


def test_caption_pointing_at_non_test_image_is_an_error(tmp_path):
    inputs = make_dataset(tmp_path, n_test=5)
    caps = pq.read_table(inputs.captions).to_pylist()
    caps.append({**caps[0], "caption_id": "bad", "image_id": "img0009"})  # a train image, test caption
    pq.write_table(pa.Table.from_pylist(caps), inputs.captions)
    with pytest.raises(ValueError, match="img0009"):
        evaluate(IdentityRetriever(15), inputs, "fr", (1,), tmp_path / "out", {})


def test_bad_retriever_output_and_bad_tags(tmp_path):
    inputs = make_dataset(tmp_path, n_test=5)

    class Short(IdentityRetriever):
        def embed_texts(self, caption_ids):
            return super().embed_texts(caption_ids)[:-1]

    with pytest.raises(ValueError, match="shape"):
        evaluate(Short(15), inputs, "fr", (1,), tmp_path / "out", {})
    with pytest.raises(ValueError, match="collides"):
        evaluate(IdentityRetriever(15), inputs, "fr", (1,), tmp_path / "out", {"mr": 1})
    with pytest.raises(ValueError, match="disagrees"):
        evaluate(IdentityRetriever(15), inputs, "fr", (1,), tmp_path / "out", {"lang": "en"})
    assert not (tmp_path / "out").exists()


def test_query_subset_by_language_code_and_pattern(tmp_path):
    """A query set such as de-task2: tagged with its own name, queries chosen by code and caption_id regex."""
    inputs = make_dataset(tmp_path)
    retriever = IdentityRetriever(N_TEST + N_TRAIN)
    row = evaluate(retriever, inputs, lang="fr-k1", ks=(1,), out_dir=tmp_path / "out",
                   tags={"system": "id"}, query_lang="fr", query_pattern=r"#fr1$")
    assert row["lang"] == "fr-k1" and row["n_queries"] == N_TEST
    assert all(c.endswith("#fr1") for c in retriever.calls[0])
    with pytest.raises(ValueError, match=r"#fr9"):
        evaluate(retriever, inputs, lang="fr-k9", ks=(1,), out_dir=tmp_path / "out2", query_lang="fr",
                 query_pattern="#fr9")


def test_gallery_embedded_once_gives_the_same_metrics(tmp_path):
    from ccr.evaluate import embed_gallery

    inputs = make_dataset(tmp_path)
    direct = evaluate(RandomRetriever(3), inputs, "fr", (1, 5, 10), tmp_path / "direct")
    ret = RandomRetriever(3)  # draws images first, then texts, as the direct run did
    embed_gallery(ret, inputs, tmp_path / "gallery.parquet")
    shared = evaluate(ret, inputs, "fr", (1, 5, 10), tmp_path / "shared", gallery=tmp_path / "gallery.parquet")
    assert shared == direct
    assert (tmp_path / "direct" / "metrics.json").read_bytes() == (tmp_path / "shared" / "metrics.json").read_bytes()
    (tmp_path / "other").mkdir()
    other = make_dataset(tmp_path / "other", n_test=N_TEST - 1)  # a gallery made from other images
    with pytest.raises(ValueError, match="not the .* images evaluated"):
        evaluate(ret, other, "fr", (1, 5, 10), tmp_path / "x", gallery=tmp_path / "gallery.parquet")
