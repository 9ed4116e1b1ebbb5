"""The real Apertium backend (skipped where Debian apertium + eng-spa + fr-es are not installed)."""

from __future__ import annotations

import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.data.tables import read_captions
from ccr.translate import translate_captions
from ccr.translate.apertium import APT_INSTALL, ApertiumError, ApertiumTranslator


def _has_pairs() -> bool:
    if shutil.which("apertium") is None:
        return False
    modes = subprocess.run(["apertium", "-l"], capture_output=True, text=True, check=False).stdout.split()
    return {"eng-spa", "es-fr"} <= set(modes)


needs_apertium = pytest.mark.skipif(not _has_pairs(), reason=f"needs Debian apertium: {APT_INSTALL}")


@needs_apertium
def test_three_sentences_en_fr():
    out = ApertiumTranslator().translate(["The dog sleeps.", "A man in a red shirt.", "Two children play."],
                                         "en", "fr")
    assert len(out) == 3
    assert "chien" in out[0].lower()
    assert "homme" in out[1].lower() and "rouge" in out[1].lower()
    assert "enfants" in out[2].lower()


@needs_apertium
def test_en_es_single_hop():
    assert "perro" in ApertiumTranslator().translate(["The dog sleeps."], "en", "es")[0].lower()


@needs_apertium
def test_alignment_with_tricky_input():
    texts = [
        "The xyzzyq cat",  # in plain-text mode apertium moved "Smith" from the next line into this one
        "Mr. Smith goes.",
        "   ",
        "A dog\nruns in the park",  # newline inside a caption
        "Hello, world!!! ...",
        'A <b> tag & "quotes"',
        "#1 player",
        "A woman.",
    ]
    out = ApertiumTranslator().translate(texts, "en", "fr")
    assert len(out) == len(texts)
    assert out[0] == "Le xyzzyq chat"  # unknown word kept, its '*' mark dropped
    assert "Smith" not in out[0] and "Herrero" in out[1]  # apertium translates the surname
    assert out[2] == ""
    assert "chien" in out[3] and "parc" in out[3] and "\n" not in out[3]
    assert out[5].startswith("Un <b>") and "&" in out[5]  # html escaping round-trips
    assert out[6].startswith("#1")  # a '#' the caption itself had is not an apertium mark
    assert "femme" in out[7].lower()
    # same results one by one: batching changes nothing
    assert [ApertiumTranslator().translate([t], "en", "fr")[0] for t in texts[:2]] == out[:2]


@needs_apertium
def test_unknown_marks_option():
    assert "*xyzzyq" in ApertiumTranslator(unknown_marks=True, clean_marks=False).translate(
        ["The xyzzyq cat"], "en", "es")[0]


def test_missing_binary_tells_install_command():
    t = ApertiumTranslator(binary="apertium-not-installed-here")
    with pytest.raises(ApertiumError, match="apt-get install apertium apertium-eng-spa apertium-fr-es"):
        t.translate(["a dog"], "en", "fr")
    assert not t.supports("en", "de")
    with pytest.raises(ApertiumError, match="cannot translate en->de"):
        t.translate(["a dog"], "en", "de")


@needs_apertium
def test_translate_captions_with_apertium(tmp_path):
    src = tmp_path / "captions.parquet"
    pq.write_table(pa.table({
        "caption_id": ["a#0", "b#0", "c#0"], "image_id": ["a", "b", "c"], "lang": ["en"] * 3,
        "text": ["A dog runs.", "A red car.", "A cat sleeps."], "origin": ["human"] * 3,
        "split": ["train", "val", "test"],
    }), src)
    translate_captions(src, "fr", "apertium", {}, tmp_path / "fr.parquet")
    t = read_captions(tmp_path / "fr.parquet")
    assert t.column("caption_id").to_pylist() == ["a#0#mt-fr", "b#0#mt-fr"]
    assert "chien" in t.column("text")[0].as_py().lower()
