"""The training loader never yields test rows or non-English human captions; params are strict."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ccr.data.tables import CAPTIONS_SCHEMA, TableError
from ccr.io import write_table_atomic
from ccr.params import resolve_teacher_params
from ccr.train import PRESETS, LeakageError, ParamError, load_split
from ccr.train import resolve_student_params as resolve_params
from ccr.train.synthetic import make_synthetic

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn"), n_images={"train": 6, "val": 4, "test": 4})


def _all_captions(inputs):
    return pq.read_table(inputs.captions).to_pylist()


@pytest.mark.parametrize("split", ["train", "val"])
def test_loader_only_english_human_rows_of_the_split(data, split):
    d = load_split(data, split, text_tokens=True)
    rows = {r["caption_id"]: r for r in _all_captions(data)}
    assert d.caption_ids, "split must not be empty"
    for cid in d.caption_ids:
        assert rows[cid]["lang"] == "en" and rows[cid]["origin"] == "human" and rows[cid]["split"] == split
    assert all(i.startswith(split) for i in d.image_ids)
    assert all(t == f"{c}#mt-fr" for c, t in zip(d.caption_ids, d.target_ids, strict=True))
    # every English en caption of the split is used, nothing else
    expected = {c for c, r in rows.items() if r["split"] == split and r["lang"] == "en"}
    assert set(d.caption_ids) == expected
    assert d.has_mt and d.s_tokens is not None and len(d.s_tokens) == len(d.caption_ids)
    assert d.desc is not None and d.desc_mask.all()


def test_loader_refuses_test_split(data):
    with pytest.raises(LeakageError):
        load_split(data, "test")


def test_loader_filters_injected_forbidden_rows(tmp_path):
    inputs = make_synthetic(tmp_path, n_images={"train": 4, "val": 2, "test": 2})
    caps = pq.read_table(inputs.captions).to_pylist()
    # a French human caption and a German MT row slipped into train: neither may be read
    caps.append({"caption_id": "train000#fr-human", "image_id": "train000", "lang": "fr", "text": "une photo",
                 "origin": "human", "split": "train", "source_id": None})
    write_table_atomic(pa.Table.from_pylist(caps, schema=CAPTIONS_SCHEMA), inputs.captions)
    mts = pq.read_table(inputs.translations).to_pylist()
    mts.append({"caption_id": "x#mt-de", "image_id": "train000", "lang": "de", "text": "ein Bild", "origin": "mt",
                "split": "train", "source_id": "train000#en0"})
    write_table_atomic(pa.Table.from_pylist(mts, schema=CAPTIONS_SCHEMA), inputs.translations)
    d = load_split(inputs, "train", descriptions=False)
    assert "train000#fr-human" not in d.caption_ids and "x#mt-de" not in d.target_ids
    assert all(r.endswith("#mt-fr") for r in d.target_ids)


def test_caption_of_test_image_in_train_is_an_error(tmp_path):
    inputs = make_synthetic(tmp_path, n_images={"train": 3, "val": 2, "test": 2})
    caps = pq.read_table(inputs.captions).to_pylist()
    caps.append({"caption_id": "leak", "image_id": "test000", "lang": "en", "text": "x", "origin": "human",
                 "split": "train", "source_id": None})
    write_table_atomic(pa.Table.from_pylist(caps, schema=CAPTIONS_SCHEMA), inputs.captions)
    with pytest.raises(TableError, match="image_id"):
        load_split(inputs, "train", descriptions=False)


def test_empty_translations_use_english(tmp_path):
    inputs = make_synthetic(tmp_path, n_images={"train": 3, "val": 2, "test": 1}, with_mt=False)
    assert pq.read_metadata(inputs.translations).num_rows == 0
    d = load_split(inputs, "val", descriptions=False)
    assert not d.has_mt and d.target_ids == d.caption_ids
    assert (d.t_pooled == d.s_pooled).all()


def test_missing_file_is_named(data):
    bad = dataclasses.replace(data, image_features=data.image_features.with_name("nope.parquet"))
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_split(bad, "val", descriptions=False)


def test_params_unknown_key_and_types():
    with pytest.raises(ParamError, match="embed_dimm"):
        resolve_params({"embed_dimm": 3})
    with pytest.raises(ParamError, match="'epochs'"):
        resolve_params({"epochs": 2.5})
    with pytest.raises(ParamError, match="visual_pooling"):
        resolve_params({"visual_pooling": "max"})
    with pytest.raises(ParamError, match="preset"):
        resolve_params({"preset": "nope"})
    p = resolve_params({"preset": "mt+slots", "lr": 1, "n_slots": 2})
    assert p.use_slots and not p.use_teacher and not p.use_soft and p.lr == 1.0 and isinstance(p.lr, float)
    # the teacher reads only its own params: a student-only key is an error there, naming the key
    with pytest.raises(ParamError, match="n_slots"):
        resolve_teacher_params({"n_slots": 2})
    with pytest.raises(ParamError, match="'epochs' must be >= 1"):
        resolve_teacher_params({"epochs": 0})
    with pytest.raises(ParamError, match="stop_after_epochs"):
        resolve_params({"stop_after_epochs": 1})  # a test hook, not a user param


def test_presets_cover_the_ablation_table():
    assert set(PRESETS) == {"zero-shot", "english-only", "mt", "mt+teacher", "mt+slots", "mt+soft", "full", "linear"}
    for name, over in PRESETS.items():
        resolve_params(over)
        assert resolve_params(over).needs_teacher == (name in ("mt+teacher", "full"))
    assert not resolve_params(PRESETS["english-only"]).use_mt


def test_description_views_from_feature_ids_when_no_table(data):
    with_table = load_split(data, "val")
    without = load_split(dataclasses.replace(data, descriptions=None), "val")
    assert (with_table.desc == without.desc).all() and (with_table.desc_mask == without.desc_mask).all()


def test_from_mapping_like_the_workflow(data):
    from types import SimpleNamespace

    from ccr.train import TrainInputs

    full = {k: str(v) for k, v in dataclasses.asdict(data).items() if k != "lang" and v is not None}
    built = TrainInputs.from_mapping({**full, "teacher": "x/teacher.pt"}, lang="fr")  # extra keys ignored
    assert built == data
    teacher_only = {k: full[k] for k in ("images", "captions", "translations", "caption_features",
                                         "translation_features")}
    t = TrainInputs.from_mapping(SimpleNamespace(**teacher_only), lang="fr")
    assert t.image_features is None and t.descriptions is None and t.translations == data.translations
    d = load_split(t, "val", images=False, descriptions=False, text_tokens=True)
    assert d.img_pooled.shape == (len(d.image_ids), 0) and d.has_mt
    with pytest.raises(ValueError, match="image_features"):
        load_split(t, "val", descriptions=False)
    with pytest.raises(KeyError, match="caption_features"):
        TrainInputs.from_mapping({"images": "a", "captions": "b"}, lang="fr")


def test_mt_of_several_languages_trains_together(data, tmp_path):
    """train.text: all-mt: the combined MT table gives one row per (English caption, translation)."""
    from ccr.translate import combine_translations

    fr = pq.read_table(data.translations)
    es = fr.set_column(fr.schema.get_field_index("lang"), "lang", pa.array(["es"] * fr.num_rows))
    es = es.set_column(es.schema.get_field_index("caption_id"), "caption_id",
                       pa.array([c.replace("#mt-fr", "#mt-es") for c in fr.column("caption_id").to_pylist()]))
    pq.write_table(es, tmp_path / "mt-es.parquet")
    combined = tmp_path / "mt-multi.parquet"
    combine_translations([data.translations, tmp_path / "mt-es.parquet"], combined)
    feats = pq.read_table(data.translation_features)
    es_feats = feats.set_column(0, "caption_id", pa.array([c.replace("#mt-fr", "#mt-es")
                                                           for c in feats.column(0).to_pylist()]))
    pq.write_table(pa.concat_tables([feats, es_feats.cast(feats.schema)]), tmp_path / "mt-multi-features.parquet")
    multi = dataclasses.replace(data, translations=combined, translation_features=tmp_path / "mt-multi-features.parquet",
                                lang="multi")
    single = load_split(data, "train")
    both = load_split(multi, "train")
    assert len(both.caption_ids) == 2 * len(single.caption_ids)
    assert {t.rsplit("#mt-", 1)[1] for t in both.target_ids} == {"fr", "es"}
    for c, t, i in zip(both.caption_ids, both.target_ids, both.image_index, strict=True):
        assert t.rsplit("#mt-", 1)[0] == c and both.image_ids[i] == c.split("#")[0]
    with pytest.raises(Exception, match="share caption ids"):
        combine_translations([data.translations, data.translations], tmp_path / "twice.parquet")


def test_back_translated_paraphrases_are_extra_english_rows(data, tmp_path):
    """train.backtranslate: each paraphrase is one more train row (its English side the paraphrase, its
    target side its source caption's MT); val rows and the teacher's data stay as they were."""
    caps = pq.read_table(data.captions).to_pylist()
    english = [c for c in caps if c["lang"] == "en" and c["origin"] == "human" and c["split"] in ("train", "val")]
    bt = pa.Table.from_pylist([{"caption_id": f"{c['caption_id']}#bt-fr", "image_id": c["image_id"], "lang": "en",
                                "text": c["text"] + " again", "origin": "mt", "split": c["split"],
                                "source_id": c["caption_id"]} for c in english], schema=CAPTIONS_SCHEMA)
    write_table_atomic(bt, tmp_path / "bt.parquet")
    feats = pq.read_table(data.caption_features)
    ids = feats.column("caption_id").to_pylist()
    keep = [i for i, c in enumerate(ids) if c in {e["caption_id"] for e in english}]
    bt_feats = feats.take(keep)
    bt_feats = bt_feats.set_column(0, "caption_id", pa.array([f"{c}#bt-fr" for c in bt_feats.column(0).to_pylist()]))
    pq.write_table(bt_feats.cast(feats.schema), tmp_path / "bt_features.parquet")
    with_bt = dataclasses.replace(data, backtranslations=tmp_path / "bt.parquet",
                                  backtranslation_features=tmp_path / "bt_features.parquet")
    plain, more = load_split(data, "train"), load_split(with_bt, "train")
    assert len(more.caption_ids) == 2 * len(plain.caption_ids)
    extra = dict(zip(more.caption_ids[len(plain.caption_ids):], more.target_ids[len(plain.caption_ids):], strict=True))
    assert all(t == b.replace("#bt-fr", "#mt-fr") for b, t in extra.items())  # paired with the source's MT
    assert len(load_split(with_bt, "val").caption_ids) == len(load_split(data, "val").caption_ids)


def test_proxy_mt_rows_follow_the_mt_rows(data, tmp_path):
    """StudentParams.proxy_mt: every English caption's proxy translation is one more row after the MT's,
    its target vector read from the proxy features; without the param the proxy tables are not read; a
    caption without a proxy translation, or a proxy without MT, is an error naming the file."""
    fr = pq.read_table(data.translations)
    hr = fr.set_column(fr.schema.get_field_index("lang"), "lang", pa.array(["hr"] * fr.num_rows))
    hr = hr.set_column(hr.schema.get_field_index("caption_id"), "caption_id",
                       pa.array([c.replace("#mt-fr", "#mt-hr") for c in fr.column("caption_id").to_pylist()]))
    pq.write_table(hr, tmp_path / "mt-hr.parquet")
    feats = pq.read_table(data.translation_features)
    hr_feats = feats.set_column(0, "caption_id", pa.array([c.replace("#mt-fr", "#mt-hr")
                                                           for c in feats.column(0).to_pylist()]))
    pooled = hr_feats.column("pooled").combine_chunks()
    flipped = pa.FixedSizeListArray.from_arrays(pa.array(-pooled.flatten().to_numpy()), pooled.type.list_size)
    hr_feats = hr_feats.set_column(hr_feats.schema.get_field_index("pooled"), "pooled", flipped)
    pq.write_table(hr_feats.cast(feats.schema), tmp_path / "mt-hr-features.parquet")
    proxy = dataclasses.replace(data, proxy_translations=tmp_path / "mt-hr.parquet",
                                proxy_translation_features=tmp_path / "mt-hr-features.parquet")
    for split in ("train", "val"):
        plain, more = load_split(data, split), load_split(proxy, split, proxy_mt=True)
        n = len(plain.caption_ids)
        assert len(more.caption_ids) == 2 * n and more.caption_ids[n:] == plain.caption_ids
        assert more.target_ids[:n] == plain.target_ids
        assert more.target_ids[n:] == [t.replace("#mt-fr", "#mt-hr") for t in plain.target_ids]
        assert (more.image_index[n:] == plain.image_index).all()
        assert (more.t_pooled[n:] == -plain.t_pooled).all() and (more.t_pooled[:n] == plain.t_pooled).all()
        assert len(load_split(proxy, split).caption_ids) == n  # the param, not the inputs, adds the rows
    with_tokens = load_split(proxy, "train", proxy_mt=True, text_tokens=True)
    assert len(with_tokens.t_tokens) == len(with_tokens.target_ids)

    pq.write_table(hr.slice(1), tmp_path / "mt-hr-short.parquet")
    short = dataclasses.replace(proxy, proxy_translations=tmp_path / "mt-hr-short.parquet")
    with pytest.raises(ValueError, match=r"mt-hr-short.parquet: 1 \w+ English caption\(s\) have no proxy translation"):
        for split in ("train", "val"):
            load_split(short, split, proxy_mt=True)
    with pytest.raises(ValueError, match="no MT into"):
        load_split(proxy, "train", proxy_mt=True, use_mt=False)
    with pytest.raises(ValueError, match="proxy_translations"):
        load_split(data, "train", proxy_mt=True)
    with pytest.raises(ParamError, match="proxy_mt"):
        resolve_params({"proxy_mt": True, "use_mt": False})
    assert "proxy_mt" not in resolve_params({}).to_dict()  # off: rule params and metadata as before it existed
    assert resolve_params({"proxy_mt": True}).numeric_dict()["proxy_mt"] is True
