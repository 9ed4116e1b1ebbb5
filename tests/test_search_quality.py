"""The issue's end-to-end check: train on the tiny data (.test/config_search: the tiny config with the
student trained 12 epochs), export the bundle with the workflow, index the 24 test images with
`ccr index`, search with the French test queries with `ccr search`, and find each query's image in the
top 10 far more often than chance (10/24) and than an untrained student of the same architecture."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from search_support import bundle_of, copy_images, french_queries, student_of
from workflow_run import CCR

from ccr.models import create_student, load_checkpoint, save_checkpoint
from ccr.search.bundle import export_bundle, load_bundle
from ccr.search.gallery import index_images, open_index

CHANCE_TOP10 = 10 / 24


def run_ccr(*args: str) -> str:
    proc = subprocess.run([CCR, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def top10_rate(results: list[list[str]], truth: list[str]) -> float:
    return float(np.mean([t in r[:10] for r, t in zip(results, truth, strict=True)]))


@pytest.mark.slow
def test_french_queries_find_their_image_through_index_and_search(search_reference, tmp_path):
    bundle_path = bundle_of(search_reference)
    photos = copy_images(search_reference, tmp_path / "photos")
    image_of = {str(p.resolve()): image_id for image_id, p in photos.items()}
    run_ccr("index", "--model", str(bundle_path), "--images", str(tmp_path / "photos"), "--out", str(tmp_path / "idx"))
    queries = french_queries(search_reference)
    assert len(queries) == 24 and all(q["lang"] == "fr" for q in queries)
    (tmp_path / "queries.txt").write_text("\n".join(q["text"] for q in queries) + "\n")
    out = json.loads(run_ccr("search", "--index", str(tmp_path / "idx"), "--queries", str(tmp_path / "queries.txt"),
                             "-k", "10", "--json"))
    found = [[image_of[r["path"]] for r in entry["results"]] for entry in out]
    rate = top10_rate(found, [q["image_id"] for q in queries])
    # the queries' language given: the same here (one encoder that knows French, a bundle without centering)
    assert json.loads(run_ccr("search", "--index", str(tmp_path / "idx"), "--queries", str(tmp_path / "queries.txt"),
                              "-k", "10", "--json", "--lang", "fr")) == out

    # The workflow's evaluation of the same student (from its cached features) measured the same thing.
    evaluated = load_bundle(bundle_path).meta["metrics"]["fr"]["t2i_r10"] / 100

    # Baseline: an untrained student of the same architecture, through the same index and search.
    meta = load_bundle(bundle_path).meta
    ckpt = load_checkpoint(student_of(search_reference, meta["source"]["student_key"]), "student")
    torch.manual_seed(0)
    untrained = create_student(ckpt["meta"]["arch"])
    save_checkpoint(tmp_path / "untrained.pt", "student", ckpt["meta"], untrained.state_dict())
    pool = None
    if meta["describer_pool"] is not None:  # knn-captions: the same training pool describes the photos
        pool = (meta["describer_pool"], load_checkpoint(bundle_path, "bundle")["state_dict"]["describer_pool.features"])
    base_bundle = export_bundle(tmp_path / "untrained.pt", tmp_path / "untrained-bundle.pt",
                                image_encoder=meta["image_encoder"], text_encoder=meta["text_encoder"],
                                describer=meta["describer"], query_languages=["fr"],
                                description_role=meta["description_role"], pool=pool)
    index_images(base_bundle, list(photos.values()), tmp_path / "idx-untrained")
    index, bundle = open_index(tmp_path / "idx-untrained")
    base_found = [[image_of[h.path] for h in hits] for hits in index.search(bundle.embed_texts(
        [q["text"] for q in queries]), 10)]
    base_rate = top10_rate(base_found, [q["image_id"] for q in queries])

    print(f"\nFrench query -> image in the top 10 of 24: trained bundle {rate:.3f} (the workflow's evaluation "
          f"{evaluated:.3f}), untrained {base_rate:.3f}, chance {CHANCE_TOP10:.3f}")
    assert rate >= 0.8
    assert abs(rate - evaluated) <= 1 / 24 + 1e-9  # re-embedding the pixels changes at most one query
    assert base_rate <= 0.65 and rate - base_rate >= 0.3


@pytest.mark.slow
def test_image_to_text_finds_its_caption_in_a_corpus(search_reference, tmp_path):
    """`ccr search --image ... --captions corpus.txt`: each test image's French caption among the corpus of all
    24 French test captions."""
    bundle_path = bundle_of(search_reference)
    photos = copy_images(search_reference, tmp_path / "photos")
    queries = french_queries(search_reference)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(q["text"] for q in queries) + "\n")
    caption_of = {q["image_id"]: q["text"] for q in queries}
    ids = sorted(photos)
    args = [a for image_id in ids for a in ("--image", str(photos[image_id]))]
    out = json.loads(run_ccr("search", "--model", str(bundle_path), *args, "--captions", str(corpus), "-k", "10",
                             "--json"))
    assert [Path(o["image"]).name for o in out] == [photos[i].name for i in ids]
    rate = top10_rate([[r["text"] for r in o["results"]] for o in out], [caption_of[i] for i in ids])
    evaluated = load_bundle(bundle_path).meta["metrics"]["fr"]["i2t_r10"] / 100
    print(f"\nimage -> its French caption in the top 10 of 24: {rate:.3f} (the workflow's evaluation {evaluated:.3f}, "
          f"chance {CHANCE_TOP10:.3f})")
    assert rate >= 0.7 and abs(rate - evaluated) <= 1 / 24 + 1e-9
