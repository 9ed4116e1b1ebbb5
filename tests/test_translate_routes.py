"""Apertium routes (param or found over the installed pairs) and back-translation to English."""

from __future__ import annotations

import shutil
import subprocess

import pyarrow as pa
import pytest

from ccr.data.tables import CAPTIONS_SCHEMA
from ccr.translate.apertium import (
    DEBIAN_MODES,
    ApertiumError,
    ApertiumTranslator,
    find_route,
    lang_code,
    mode_langs,
    offline_targets,
)
from ccr.translate.backtranslate import back_translate, back_translate_captions


def _installed() -> set[str]:
    if shutil.which("apertium") is None:
        return set()
    return set(subprocess.run(["apertium", "-l"], capture_output=True, text=True, check=False).stdout.split())


INSTALLED = _installed()


def needs(*modes: str):
    return pytest.mark.skipif(not set(modes) <= INSTALLED, reason=f"needs Debian apertium pairs {modes}: "
                              f"apt-get install apertium {' '.join(sorted({DEBIAN_MODES[m] for m in modes}))}")


def test_mode_names_and_codes():
    assert mode_langs("eng-spa") == ("en", "es") and mode_langs("fr-es") == ("fr", "es")
    assert mode_langs("eng-cat_valencia") == ("en", "ca")
    assert mode_langs("eng-cat_valencia", plain_only=True) is None
    assert mode_langs("eo-en-bytecode") == ("eo", "en") and mode_langs("Cyrl-Latn") is None
    assert lang_code("FRA") == "fr" and lang_code("hbs") == "sh" and lang_code("ast") == "ast"


def test_find_route_fewest_hops_then_pivot_preference():
    modes = ["eng-spa", "es-fr", "eng-cat", "cat-fra", "spa-ita", "cat-ita", "ita-srd", "cat-srd", "fra-frp"]
    assert find_route("en", "es", modes) == ("eng-spa",)
    assert find_route("en", "fr", modes) == ("eng-spa", "es-fr")                  # es before ca
    assert find_route("en", "fr", modes, pivots=["ca", "es"]) == ("eng-cat", "cat-fra")
    assert find_route("en", "sc", modes) == ("eng-cat", "cat-srd")                # 2 hops beat 3
    assert find_route("en", "frp", modes) == ("eng-spa", "es-fr", "fra-frp")
    assert find_route("en", "frp", modes, max_hops=2) is None
    assert find_route("en", "de", modes) is None
    assert find_route("eng", "fra", list(reversed(modes))) == ("eng-spa", "es-fr")  # input order irrelevant


def test_debian_catalogue_targets():
    # Debian bookworm's pairs give English -> these languages (docs/backends-translate-describe.md)
    targets = offline_targets("en", DEBIAN_MODES)
    assert targets["fr"] == ("eng-spa", "es-fr") and targets["it"] == ("eng-spa", "spa-ita")
    assert targets["bg"] == ("eng-hbs", "hbs-mkd", "mkd-bul")
    for lang in ("de", "cs", "ja", "zh", "ru", "nl", "sv"):
        assert lang not in targets
    assert find_route("fr", "en", DEBIAN_MODES) == ("fr-es", "spa-eng")


def test_route_param_checked_and_named():
    with pytest.raises(ValueError, match="'route'"):
        ApertiumTranslator(route="eng-spa")
    with pytest.raises(ValueError, match="'route'.*not a chain.*es-fr"):
        ApertiumTranslator(route=["eng-cat", "es-fr"])
    with pytest.raises(ValueError, match="'route'.*nonsense"):
        ApertiumTranslator(route=["nonsense"])
    with pytest.raises(ValueError, match="'max_hops'"):
        ApertiumTranslator(max_hops=0)
    with pytest.raises(ValueError, match="'pivots'"):
        ApertiumTranslator(pivots="es")
    t = ApertiumTranslator(route=["eng-cat", "cat-fra"], binary="apertium-not-installed-here")
    assert t.supports("en", "fr") and not t.supports("en", "es")
    with pytest.raises(ApertiumError, match="'route'.*en->it"):
        t.translate(["a dog"], "en", "it")


def test_without_binary_supports_follows_the_debian_catalogue():
    t = ApertiumTranslator(binary="apertium-not-installed-here")
    assert t.supports("en", "it") and t.supports("en", "pt") and not t.supports("en", "de")
    with pytest.raises(ApertiumError, match="apt-get install"):
        t.translate(["a dog"], "en", "it")


def test_missing_pair_names_its_package(monkeypatch):
    t = ApertiumTranslator()
    monkeypatch.setattr(t, "installed_modes", lambda: {"eng-spa", "es-fr"})
    assert t.supports("en", "fr") and not t.supports("en", "it")  # found over what is installed
    t2 = ApertiumTranslator(route=["eng-spa", "spa-ita"])
    monkeypatch.setattr(t2, "installed_modes", lambda: {"eng-spa", "es-fr"})
    with pytest.raises(ApertiumError, match="spa-ita.*apt-get install apertium apertium-spa-ita"):
        t2.translate(["a dog"], "en", "it")


@needs("eng-spa", "spa-ita")
def test_real_chain_en_it_one_stream_per_hop(monkeypatch):
    t = ApertiumTranslator()
    calls = []
    real = t._run
    monkeypatch.setattr(t, "_run", lambda mode, stream: calls.append(mode) or real(mode, stream))
    out = t.translate(["The dog sleeps.", "A man in a red shirt.", "Two children play."], "en", "it")
    assert calls == ["eng-spa", "spa-ita"]  # one process per hop for the whole batch
    assert "cane" in out[0].lower() and "uomo" in out[1].lower() and len(out) == 3


@needs("eng-cat", "cat-fra")
def test_real_route_param_via_catalan():
    out = ApertiumTranslator(route=["eng-cat", "cat-fra"]).translate(["The dog sleeps.", "A woman."], "en", "fr")
    assert "chien" in out[0].lower() and "femme" in out[1].lower()


def _mt_rows(texts: list[str], lang: str, splits: list[str] | None = None) -> tuple[pa.Table, pa.Table]:
    n = len(texts)
    splits = splits or ["train"] * n
    english = pa.table({"caption_id": [f"im{i}#en" for i in range(n)], "image_id": [f"im{i}" for i in range(n)],
                        "lang": ["en"] * n, "text": [f"source {i}" for i in range(n)], "origin": ["human"] * n,
                        "split": splits, "source_id": pa.nulls(n, pa.string())}, schema=CAPTIONS_SCHEMA)
    mt = pa.table({"caption_id": [f"im{i}#en#mt-{lang}" for i in range(n)],
                   "image_id": [f"im{i}" for i in range(n)], "lang": [lang] * n, "text": texts,
                   "origin": ["mt"] * n, "split": splits, "source_id": [f"im{i}#en" for i in range(n)]},
                  schema=CAPTIONS_SCHEMA)
    return mt, english


@needs("fr-es", "spa-eng")
def test_back_translation_real_apertium(tmp_path):
    mt, english = _mt_rows(["Un chien dort sur l'herbe.", "Une femme en robe rouge.", "Deux enfants jouent."], "fr",
                           ["train", "val", "train"])
    # the third source already reads like its back-translation: dropped as identical
    english = english.set_column(3, "text", pa.array(["source 0", "source 1", "two boys play"]))
    out = back_translate(mt, "fr", english=english)
    assert out.column("caption_id").to_pylist() == ["im0#en#bt-fr", "im1#en#bt-fr"]
    assert out.column("source_id").to_pylist() == ["im0#en", "im1#en"]
    assert set(out.column("lang").to_pylist()) == {"en"} and set(out.column("origin").to_pylist()) == {"mt"}
    assert out.column("split").to_pylist() == ["train", "val"]
    texts = out.column("text").to_pylist()
    assert "dog" in texts[0].lower() and "woman" in texts[1].lower() and "red" in texts[1].lower()
    kept = back_translate(mt, "fr", english=english, drop_identical=False)
    assert kept.num_rows == 3 and kept.column("text").to_pylist()[2] == "Two boys play."
    # batch size changes nothing (one stream per hop per batch)
    assert back_translate(mt, "fr", english=english, batch_size=1).equals(out)
    import pyarrow.parquet as pq

    pq.write_table(mt, tmp_path / "mt.parquet")
    pq.write_table(english, tmp_path / "captions.parquet")
    back_translate_captions(tmp_path / "mt.parquet", tmp_path / "captions.parquet", "fr", tmp_path / "bt.parquet")
    assert pq.read_table(tmp_path / "bt.parquet").equals(out)


def test_back_translation_refuses_bad_rows():
    mt, english = _mt_rows(["un chien"], "fr", ["test"])
    with pytest.raises(ValueError, match="split 'test'"):
        back_translate(mt, "fr", english=english)
    mt, english = _mt_rows(["un chien"], "fr")
    with pytest.raises(ValueError, match="not a machine translation into 'de'"):
        back_translate(mt, "de", english=english)
    with pytest.raises(ValueError, match="'english'"):
        back_translate(mt, "fr")
    with pytest.raises(ValueError, match="'lang'"):
        back_translate(mt, "en", english=english)
    with pytest.raises(ValueError, match="not in the English captions"):
        back_translate(mt, "fr", english=english.slice(0, 0))
