"""`ccr index` / `ccr search` (ccr.search.gallery): which files are indexed, resumption after a crash
without lost or repeated rows, unreadable images skipped and counted, --add, the bundle check, and the
CLI's output shapes. Uses the tiny reference run's bundle (a weakly trained student: these tests check
the mechanics; tests/test_search_quality.py checks the retrieval)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from search_support import bundle_of, copy_images, french_queries, student_of
from workflow_run import CCR

from ccr.search import gallery
from ccr.search.bundle import Bundle, export_bundle, load_bundle
from ccr.search.gallery import IndexFolderError, index_images, list_images, open_index


@pytest.fixture(scope="module")
def bundle(tiny_reference) -> Bundle:
    return load_bundle(bundle_of(tiny_reference))


@pytest.fixture(scope="module")
def photos(tiny_reference, tmp_path_factory) -> dict[str, Path]:
    """The 24 test images as a folder of photos (image_id -> file), 8 of them in a sub-folder."""
    root = tmp_path_factory.mktemp("photos")
    files = copy_images(tiny_reference, root)
    for image_id in sorted(files)[16:]:
        (root / "more").mkdir(exist_ok=True)
        files[image_id] = Path(shutil.move(files[image_id], root / "more" / files[image_id].name))
    return files


def vectors(folder: Path) -> tuple[list[str], np.ndarray]:
    """(paths, stored vectors) of an index folder, row by row."""
    index = faiss.read_index(str(folder / "index.faiss"))
    paths = pq.read_table(folder / "images.parquet").column("path").to_pylist()
    return paths, index.reconstruct_n(0, index.ntotal)


def test_list_images_reads_folders_and_manifests(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.JPG", "a/b/y.png", "a/b/z.webp", "a/notes.txt", "a/b/.hidden.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert list_images(tmp_path / "a") == [str((tmp_path / p).resolve()) for p in ("a/b/y.png", "a/b/z.webp", "a/x.JPG")]
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "note"], ["a/x.JPG", "1"], ["/abs/q.png", "2"], ["a/x.JPG", "dup"]])
    assert list_images(tmp_path / "m.csv") == [str((tmp_path / "a/x.JPG").resolve()), "/abs/q.png"]
    (tmp_path / "m.jsonl").write_text('{"image_path": "a/b/y.png"}\n')
    assert list_images(tmp_path / "m.jsonl") == [str((tmp_path / "a/b/y.png").resolve())]
    pq.write_table(pa.table({"file": ["a/x.JPG"]}), tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"m\.parquet: the manifest needs a column 'path' or 'image_path'"):
        list_images(tmp_path / "m.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files found"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder or manifest"):
        list_images(tmp_path / "nope")


@pytest.mark.slow
def test_index_resumes_after_a_crash_without_lost_or_repeated_rows(bundle, photos, tmp_path, monkeypatch, caplog):
    reference = index_images(bundle, list(photos.values()), tmp_path / "ref", shard_size=4)
    assert reference.rows == 24

    calls = {"n": 0}
    real = Bundle.embed_loaded

    def crash_on_third(self, images, paths=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash (the machine died)")
        return real(self, images, paths)

    monkeypatch.setattr(Bundle, "embed_loaded", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        index_images(bundle, list(photos.values()), tmp_path / "idx", shard_size=4)
    shards = sorted((tmp_path / "idx" / "embeddings").glob("*.shards/part-*.parquet"))
    assert len(shards) == 2 and not (tmp_path / "idx" / "index.json").exists()  # nothing looks finished

    calls["n"] = -100  # no more crashes; count what the rerun embeds
    with caplog.at_level(logging.INFO, logger="ccr"):
        run = index_images(bundle, list(photos.values()), tmp_path / "idx", shard_size=4)
    assert calls["n"] == -100 + 4  # 6 shards of 4 images, 2 were done
    assert "16 image(s) to embed (8 already done in shards" in caplog.text and "resuming" in caplog.text
    assert run.added == 24 and run.rows == 24
    paths, vecs = vectors(tmp_path / "idx")
    ref_paths, ref_vecs = vectors(tmp_path / "ref")
    assert paths == ref_paths and len(set(paths)) == 24  # same rows, same order, none twice
    np.testing.assert_allclose(vecs, ref_vecs, atol=1e-6)
    assert not list((tmp_path / "idx" / "embeddings").glob("*.shards"))


@pytest.mark.slow
def test_unreadable_images_are_skipped_logged_and_counted(bundle, photos, tmp_path, caplog):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(photos.values())[:4]
    for p in good:
        shutil.copyfile(p, folder / p.name)
    (folder / "garbage.png").write_bytes(b"this is not an image")
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    with caplog.at_level(logging.WARNING, logger="ccr"):
        run = index_images(bundle, folder, tmp_path / "idx")
    assert (run.added, run.skipped, run.rows) == (4, 2, 4)
    assert sorted(Path(p).name for p, _ in run.skipped_files) == ["garbage.png", "truncated.png"]
    for name in ("garbage.png", "truncated.png"):
        assert f"skipping unreadable image {(folder / name).resolve()}" in caplog.text
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["rows"] == 4 and meta["skipped"] == 2
    paths, _ = vectors(tmp_path / "idx")
    assert sorted(Path(p).name for p in paths) == sorted(p.name for p in good)
    # a folder with nothing readable is an error, not an empty index
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(IndexFolderError, match="no image could be read"):
        index_images(bundle, tmp_path / "bad", tmp_path / "idx-bad")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_add_appends_only_the_new_images(bundle, photos, tmp_path, kind):
    files = sorted(photos.values())
    folder = tmp_path / "album"
    folder.mkdir()
    for p in files[:10]:
        shutil.copyfile(p, folder / p.name)
    first = index_images(bundle, folder, tmp_path / "idx", kind=kind)
    assert first.rows == 10
    old_paths, old_vecs = vectors(tmp_path / "idx")
    with pytest.raises(IndexFolderError, match="already holds an index of 10 images; pass --add"):
        index_images(bundle, folder, tmp_path / "idx", kind=kind)
    for p in files[10:14]:
        shutil.copyfile(p, folder / p.name)
    other = "ivf" if kind == "hnsw" else "hnsw"
    with pytest.raises(IndexFolderError, match=f"is a {kind} index; --kind {other} cannot change it"):
        index_images(bundle, folder, tmp_path / "idx", kind=other, add=True)
    run = index_images(bundle, folder, tmp_path / "idx", add=True)
    assert (run.added, run.already, run.rows) == (4, 10, 14)
    paths, vecs = vectors(tmp_path / "idx")
    assert paths[:10] == old_paths and len(set(paths)) == 14
    assert sorted(Path(p).name for p in paths[10:]) == sorted(p.name for p in files[10:14])
    np.testing.assert_allclose(vecs[:10], old_vecs, atol=1e-6)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["kind"] == kind and [b["rows"] for b in meta["batches"]] == [10, 4]
    # a new image is found by its own embedding
    index, _ = open_index(tmp_path / "idx")
    hit = index.search(bundle.embed_images([paths[12]]), 1)[0][0]
    assert hit.path == paths[12] and hit.row == 12
    again = index_images(bundle, folder, tmp_path / "idx", add=True)
    assert (again.added, again.already, again.rows) == (0, 14, 14)


@pytest.mark.slow
def test_an_add_interrupted_while_committing_is_finished_by_the_next_run(bundle, photos, tmp_path, monkeypatch):
    files = sorted(photos.values())
    index_images(bundle, files[:6], tmp_path / "idx")
    real = gallery.write_table_atomic

    def fail_on_paths_table(table, path):
        if Path(path).name == "images.parquet":
            raise OSError("simulated crash after index.faiss was saved")
        return real(table, path)

    monkeypatch.setattr(gallery, "write_table_atomic", fail_on_paths_table)
    with pytest.raises(OSError, match="simulated crash"):
        index_images(bundle, files[:9], tmp_path / "idx", add=True)
    monkeypatch.setattr(gallery, "write_table_atomic", real)
    with pytest.raises(IndexFolderError, match="interrupted"):  # index.faiss has 9 rows, the rest says 6
        open_index(tmp_path / "idx")
    run = index_images(bundle, files[:9], tmp_path / "idx", add=True)
    assert (run.added, run.rows) == (0, 9)
    paths, vecs = vectors(tmp_path / "idx")
    assert paths == [str(p.resolve()) for p in files[:9]] and vecs.shape[0] == 9


@pytest.mark.slow
def test_an_index_refuses_another_bundle(tiny_reference, bundle, photos, tmp_path):
    index_images(bundle, sorted(photos.values())[:3], tmp_path / "idx")
    # the same weights, exported again with other metadata: another checksum
    other = load_bundle(export_bundle(student_of(tiny_reference), tmp_path / "other.pt",
                                      image_encoder=bundle.meta["image_encoder"],
                                      text_encoder=bundle.meta["text_encoder"],
                                      describer=bundle.meta["describer"], query_languages=["fr", "de"]))
    with pytest.raises(IndexFolderError, match="refusing to search it with"):
        open_index(tmp_path / "idx", model=other.path)
    with pytest.raises(IndexFolderError, match="embeddings of two models cannot share an index"):
        index_images(other, sorted(photos.values())[3:5], tmp_path / "idx", add=True)


def run_ccr(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([CCR, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_cli_index_and_search_output_shapes(tiny_reference, photos, tmp_path):
    bundle = bundle_of(tiny_reference)
    root = next(iter(photos.values())).parent
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    try:
        proc = run_ccr("index", "--model", str(bundle), "--images", str(root), "--out", str(tmp_path / "idx"))
    finally:
        (root / "broken.jpg").unlink()
    assert "added 24 image(s), skipped 1 unreadable" in proc.stdout
    assert "index images: 25/25 rows" in proc.stderr  # plain progress lines when not on a terminal
    assert "skipping unreadable image" in proc.stderr and "broken.jpg" in proc.stderr

    queries = [q["text"] for q in french_queries(tiny_reference)[:3]]
    (tmp_path / "queries.txt").write_text("\n".join(queries) + "\n\n")
    proc = run_ccr("search", "--index", str(tmp_path / "idx"), "une femme sur un vélo", "--queries",
                   str(tmp_path / "queries.txt"), "-k", "5", "--json", "--html", str(tmp_path / "out.html"))
    out = json.loads(proc.stdout)
    assert [o["query"] for o in out] == ["une femme sur un vélo", *queries]
    indexed = {str(p.resolve()) for p in photos.values()}
    for entry in out:
        assert set(entry) == {"query", "results"} and len(entry["results"]) == 5
        assert [r["rank"] for r in entry["results"]] == [1, 2, 3, 4, 5]
        assert all(set(r) == {"rank", "score", "path"} and r["path"] in indexed for r in entry["results"])
        scores = [r["score"] for r in entry["results"]]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    html = (tmp_path / "out.html").read_text()
    assert html.count('<img class="thumb" src="data:image/jpeg;base64,') == 4 * 5

    table = run_ccr("search", "--index", str(tmp_path / "idx"), queries[0], "-k", "3").stdout
    lines = table.splitlines()
    assert lines[0] == f"query: {queries[0]}" and lines[1].split() == ["rank", "score", "path"] and len(lines) == 5

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a red circle\nun triangle vert\neine blaue Kugel\n")
    image = sorted(photos.values())[0]
    out = json.loads(run_ccr("search", "--index", str(tmp_path / "idx"), "--image", str(image), "--captions",
                             str(corpus), "-k", "2", "--json").stdout)
    assert out[0]["image"] == str(image.resolve()) and [r["rank"] for r in out[0]["results"]] == [1, 2]
    assert all(r["text"] in corpus.read_text().splitlines() for r in out[0]["results"])

    # errors name what is wrong, with a non-zero exit and no traceback
    proc = run_ccr("search", "--index", str(tmp_path / "nowhere"), "x", ok=False)
    assert proc.returncode == 2 and "not an index folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_ccr("search", "--index", str(tmp_path / "idx"), "--image", str(image), ok=False)
    assert proc.returncode == 2 and "--image needs --captions" in proc.stderr
