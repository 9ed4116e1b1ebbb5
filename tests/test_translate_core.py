"""translate_captions: row selection, output schema, resume after a crash, backend 'none', errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.data.tables import read_captions
from ccr.registry import UnknownBackendError
from ccr.translate import TRANSLATORS, TranslationError, Translator, translate_captions
from ccr.translate.quality import mt_quality


def _captions(path: Path) -> Path:
    rows = []
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for i in range(n):
            img = f"{split}{i}"
            rows.append((f"{img}#en0", img, "en", f"a dog number {i} in {split}", "human", split, None))
            rows.append((f"{img}#fr0", img, "fr", f"un chien {i}", "human", split, None))
        rows.append((f"{split}0#desc0", f"{split}0", "en", "a photo of a dog", "description", split, None))
    rows.append(("train0#en0#mt-de", "train0", "de", "ein Hund", "mt", "train", "train0#en0"))
    cols = list(zip(*rows, strict=True))
    names = ["caption_id", "image_id", "lang", "text", "origin", "split", "source_id"]
    pq.write_table(pa.table({n: list(c) for n, c in zip(names, cols, strict=True)}), path)
    return path


# A crash is simulated from outside the params: params are part of the output's fingerprint, and a
# resume only continues shards made with the same fingerprint.
CRASH: dict[str, int | None] = {"on_call": None}


class Upper:
    """A deterministic toy translator (the selection/sharding logic is what is under test)."""

    calls = 0

    def __init__(self, empty_for: str | None = None):
        self.fail_on_call, self.empty_for, self.calls = CRASH["on_call"], empty_for, 0

    def supports(self, src: str, tgt: str) -> bool:
        return (src, tgt) == ("en", "fr")

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash")
        return ["" if t == self.empty_for else t.upper() for t in texts]


@pytest.fixture
def upper_backend():
    made: list[Upper] = []

    def factory(**params):
        made.append(Upper(**params))
        return made[-1]

    TRANSLATORS.register("test-upper", factory)
    yield made
    TRANSLATORS._factories.pop("test-upper", None)
    CRASH["on_call"] = None


def test_selects_only_english_human_train_val(tmp_path, upper_backend):
    src = _captions(tmp_path / "captions.parquet")
    out = tmp_path / "mt.parquet"
    translate_captions(src, "fr", "test-upper", {}, out, shard_size=3)
    t = read_captions(out)
    assert t.num_rows == 7  # 5 train + 2 val English human captions; never test, never descriptions/mt
    assert set(t.column("split").to_pylist()) == {"train", "val"}
    assert set(t.column("origin").to_pylist()) == {"mt"}
    assert set(t.column("lang").to_pylist()) == {"fr"}
    row = t.slice(0, 1).to_pylist()[0]
    assert row == {"caption_id": "train0#en0#mt-fr", "image_id": "train0", "lang": "fr",
                   "text": "A DOG NUMBER 0 IN TRAIN", "origin": "mt", "split": "train", "source_id": "train0#en0"}
    assert upper_backend[0].calls == 3  # shards of 3, 3, 1
    assert not (tmp_path / "mt.parquet.shards").exists()


def test_resume_after_crash(tmp_path, upper_backend):
    src = _captions(tmp_path / "captions.parquet")
    out = tmp_path / "mt.parquet"
    CRASH["on_call"] = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        translate_captions(src, "fr", "test-upper", {}, out, shard_size=3)
    assert not out.exists()  # a partial output never looks complete
    assert len(list((tmp_path / "mt.parquet.shards").glob("part-*.parquet"))) == 1
    CRASH["on_call"] = None
    translate_captions(src, "fr", "test-upper", {}, out, shard_size=3)
    assert upper_backend[1].calls == 2  # only the 4 remaining captions were translated
    ids = read_captions(out).column("caption_id").to_pylist()
    assert len(ids) == len(set(ids)) == 7
    assert ids[0] == "train0#en0#mt-fr" and ids[-1] == "val1#en0#mt-fr"  # source order kept
    assert not (tmp_path / "mt.parquet.shards").exists()


def test_crash_then_data_change_never_mixes_shards(tmp_path, upper_backend, caplog):
    src = _captions(tmp_path / "captions.parquet")
    out = tmp_path / "mt.parquet"
    CRASH["on_call"] = 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        translate_captions(src, "fr", "test-upper", {}, out, shard_size=3)
    assert len(list((tmp_path / "mt.parquet.shards").glob("part-*.parquet"))) == 2
    CRASH["on_call"] = None
    # the data changes in place (same caption ids, new text), then the stage reruns
    table = pq.read_table(src)
    texts = [t.replace("dog", "cat") for t in table.column("text").to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts)), src)
    with caplog.at_level("WARNING", logger="ccr"):
        translate_captions(src, "fr", "test-upper", {}, out, shard_size=3)
    assert "discarded 2 leftover shard(s)" in caplog.text
    assert upper_backend[1].calls == 3  # everything translated again from the new data
    fresh = tmp_path / "fresh.parquet"
    translate_captions(src, "fr", "test-upper", {}, fresh, shard_size=3)
    assert read_captions(out).equals(read_captions(fresh))
    assert all("CAT" in t for t in read_captions(out).column("text").to_pylist())
    # a settings change discards them too: shards carry the backend and params they were made with
    CRASH["on_call"] = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        translate_captions(src, "fr", "test-upper", {}, tmp_path / "p.parquet", shard_size=3)
    CRASH["on_call"] = None
    translate_captions(src, "fr", "test-upper", {"empty_for": "nothing matches"}, tmp_path / "p.parquet", shard_size=3)
    assert upper_backend[-1].calls == 3


def test_empty_translation_names_caption(tmp_path, upper_backend):
    src = _captions(tmp_path / "captions.parquet")
    with pytest.raises(TranslationError, match="train2#en0"):
        translate_captions(src, "fr", "test-upper", {"empty_for": "a dog number 2 in train"}, tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_unsupported_pair_names_backend_and_pair(tmp_path, upper_backend):
    src = _captions(tmp_path / "captions.parquet")
    with pytest.raises(TranslationError, match=r"'test-upper' cannot translate en->de"):
        translate_captions(src, "de", "test-upper", {}, tmp_path / "o.parquet")
    with pytest.raises(TranslationError, match=r"'apertium' cannot translate en->de"):
        translate_captions(src, "de", "apertium", {}, tmp_path / "o.parquet")


def test_unknown_backend_and_param(tmp_path):
    src = _captions(tmp_path / "captions.parquet")
    with pytest.raises(UnknownBackendError, match="nope"):
        translate_captions(src, "fr", "nope", {}, tmp_path / "o.parquet")
    with pytest.raises(ValueError, match="colour"):
        translate_captions(src, "fr", "apertium", {"colour": 1}, tmp_path / "o.parquet")


def test_none_backend_writes_empty_table(tmp_path):
    src = _captions(tmp_path / "captions.parquet")
    out = tmp_path / "none.parquet"
    translate_captions(src, "de", "none", {}, out)
    t = read_captions(out)
    assert t.num_rows == 0 and t.schema.names == read_captions(src).schema.names
    assert isinstance(TRANSLATORS.create("none"), Translator)


def test_missing_captions_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        translate_captions(tmp_path / "missing.parquet", "fr", "none", {}, tmp_path / "o.parquet")


def test_mt_quality():
    perfect = mt_quality(["le chat est sur le tapis"], ["le chat est sur le tapis"])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    poor = mt_quality(["un chien court"], ["le chat est sur le tapis"])
    assert poor["bleu"] < 10 and poor["chrf"] < 30
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        mt_quality(["a", "b"], ["a"])


def test_mt_quality_of_apertium_on_parallel_files(tmp_path):
    """score_backend translates a parallel file and writes BLEU/chrF; a line-count mismatch is named."""
    import gzip
    import json
    import shutil

    from ccr.translate.quality import score_backend

    if shutil.which("apertium") is None:
        pytest.skip("apertium not installed (apt-get install apertium apertium-eng-spa apertium-fr-es)")
    src, ref = tmp_path / "t.en.gz", tmp_path / "t.fr"
    with gzip.open(src, "wt") as handle:
        handle.write("A dog runs in the park.\nTwo men are playing football.\n")
    ref.write_text("Un chien court dans le parc.\nDeux hommes jouent au football.\n")
    scores = score_backend("apertium", {}, src, ref, "en", "fr", tmp_path / "q.json")
    assert scores["n"] == 2 and 0 < scores["chrf"] <= 100
    assert json.loads((tmp_path / "q.json").read_text())["bleu"] == pytest.approx(scores["bleu"])
    ref.write_text("Un chien court dans le parc.\n")
    with pytest.raises(ValueError, match="t.fr has 1"):
        score_backend("apertium", {}, src, ref, "en", "fr", tmp_path / "q2.json")
