"""ccr.keys.content_stamp: the source data's stamp follows its content, not its mtimes or where it was copied."""

from __future__ import annotations

import json
import os
import shutil

from ccr.keys import content_stamp


def _data(root):
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"\xff\xd8 image a")
    (root / "images" / "b.jpg").write_bytes(b"\xff\xd8 image b")
    (root / "captions.csv").write_text("a,a dog\nb,a cat\n")
    return [str(root / "images"), str(root / "captions.csv")]


def test_new_mtimes_and_a_fresh_copy_keep_the_stamp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = [p.replace(str(tmp_path) + "/", "") for p in _data(tmp_path / "data")]
    cache = tmp_path / "cache.json"
    before = content_stamp(paths, cache)
    for p in (tmp_path / "data").rglob("*"):
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    assert content_stamp(paths, cache) == before
    shutil.move(tmp_path / "data", tmp_path / "old")
    shutil.copytree(tmp_path / "old", tmp_path / "data")  # new inodes and mtimes, same bytes
    assert content_stamp(paths, cache) == before
    assert content_stamp(paths, None) == before  # the cache only saves reading


def test_an_edit_changes_the_stamp_even_with_size_and_mtime_kept(tmp_path):
    paths = _data(tmp_path)
    cache = tmp_path / "cache.json"
    before = content_stamp(paths, cache)
    image = tmp_path / "images" / "b.jpg"
    st = image.stat()
    image.write_bytes(b"\xff\xd8 image c")  # same size
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: the inode's ctime is all that moved
    # size, mtime and inode equal: the cached digest stands (the cheap check any mtime-based tool makes) ...
    assert content_stamp(paths, cache) == before
    # ... and a copy to a new inode, or no cache, reads the bytes again
    assert content_stamp(paths, None) != before
    (tmp_path / "images" / "new.jpg").write_bytes(b"another")
    assert content_stamp(paths, cache) != before


def test_a_broken_cache_is_rebuilt(tmp_path):
    paths = _data(tmp_path)
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    stamp = content_stamp(paths, cache)
    assert stamp == content_stamp(paths, None)
    assert set(json.loads(cache.read_text())) == {str(tmp_path / "images" / "a.jpg"),
                                                    str(tmp_path / "images" / "b.jpg"), str(tmp_path / "captions.csv")}
