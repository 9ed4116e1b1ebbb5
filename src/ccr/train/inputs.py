"""What training reads, and the guarded loader that reads it.

Training may only see English human captions and their machine translations of the ``train`` and
``val`` splits (plus image and description features of those splits).  The loader enforces it twice:
Parquet row filters keep forbidden rows from ever being materialised, and assertions check the
result, so a test-split row or a human target-language caption can never leak into training or model
selection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ccr.data.tables import TableError, validate_captions, validate_images
from ccr.features.store import Features, read_fixed_rows, read_rows, to_matrix
from ccr.io import input_fingerprints

log = logging.getLogger("ccr.train")

TRAIN_SPLITS = ("train", "val")


class LeakageError(AssertionError):
    """A row training must never see (test split, or a non-English human caption) got through."""


@dataclass
class TrainInputs:
    images: Path                       # images.parquet (image_id, path, split)
    captions: Path                     # human captions (en all splits; target-language refs on test)
    translations: Path | None          # mt rows (lang=target, source_id=English caption_id); may be EMPTY
    descriptions: Path | None          # description rows (caption_id f"{image_id}#desc{k}")
    image_features: Path | None        # None only where no image is needed (the text-only teacher)
    caption_features: Path             # text features for the captions table rows
    translation_features: Path | None
    description_features: Path | None
    lang: str                          # target language
    backtranslations: Path | None = None          # English paraphrases: the MT translated back (origin mt,
    backtranslation_features: Path | None = None  # lang en, source_id = the English caption); optional
    proxy_translations: Path | None = None        # MT into related languages (Croatian for Czech), read with
    proxy_translation_features: Path | None = None  # StudentParams.proxy_mt only; optional

    @classmethod
    def from_mapping(cls, mapping: Any, lang: str) -> TrainInputs:
        """Build from a mapping of field name -> path (e.g. Snakemake's ``input``); other keys are ignored.

        ``images``, ``captions`` and ``caption_features`` are required; absent optional fields are None.
        """
        def get(key: str) -> Path | None:
            value = mapping.get(key) if hasattr(mapping, "get") else getattr(mapping, key, None)
            return Path(str(value)) if value else None

        missing = [k for k in ("images", "captions", "caption_features") if get(k) is None]
        if missing:
            raise KeyError(f"TrainInputs.from_mapping: missing required input(s) {missing}")
        return cls(images=get("images"), captions=get("captions"), translations=get("translations"),
                   descriptions=get("descriptions"), image_features=get("image_features"),
                   caption_features=get("caption_features"), translation_features=get("translation_features"),
                   description_features=get("description_features"), lang=lang,
                   backtranslations=get("backtranslations"),
                   backtranslation_features=get("backtranslation_features"),
                   proxy_translations=get("proxy_translations"),
                   proxy_translation_features=get("proxy_translation_features"))

    def fingerprints(self, *names: str) -> dict[str, str]:
        """name -> fingerprint of the given input fields that are set (see :func:`ccr.io.read_fingerprint`)."""
        return input_fingerprints({name: getattr(self, name) for name in names})

    def has_translations(self) -> bool:
        """True when a non-empty translations table exists (read from the Parquet footer only)."""
        if self.translations is None:
            return False
        path = Path(self.translations)
        if not path.exists():
            raise FileNotFoundError(f"translations table not found: {path} (TrainInputs.translations)")
        return pq.ParquetFile(path).metadata.num_rows > 0


@dataclass
class TokenRows:
    """Word tokens of ``n`` texts, stored ragged: row ``i`` is ``flat[offsets[i]:offsets[i + 1]]``.

    :meth:`padded` gives, for any rows, exactly what a zero-padded ``(n, length, D)`` array would hold
    there, so a batch costs ``B x length x D`` while the split is held once, unpadded (on M30K-F8K the
    padded English and MT tokens of a student took 4.3 GB, and the Arrow copies while reading as much
    again).  ``length`` is the padded length of the whole split: ``min(max_len, longest row)``.
    """

    flat: np.ndarray       # (N, D) float32, rows' tokens one after another (each cut to ``length``)
    offsets: np.ndarray    # (n + 1,) int64
    length: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.flat.shape[1])

    def padded(self, rows: np.ndarray | range | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(B, length, D) float32 zero-padded tokens of ``rows`` and their mask (B, length) bool."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.offsets[rows]
        mask = np.arange(self.length) < (self.offsets[rows + 1] - starts)[:, None]
        out = np.zeros((len(rows), self.length, self.dim), np.float32)
        out[mask] = self.flat[(starts[:, None] + np.arange(self.length))[mask]]
        return out, mask

    def concat(self, other: TokenRows) -> TokenRows:
        """These rows, then ``other``'s (the longer padded length of the two)."""
        offsets = np.concatenate([self.offsets, other.offsets[1:] + self.offsets[-1]])
        return TokenRows(np.concatenate([self.flat, other.flat]), offsets, max(self.length, other.length))


def token_rows(column: pa.ChunkedArray, rows: np.ndarray, max_len: int, where: str) -> TokenRows:
    """The ragged ``tokens`` column (``list<fixed_size_list<float32>[D]>``) at ``rows`` (table row
    indices, in the wanted order, repeats allowed), each row cut to its first ``max_len`` tokens.

    Read chunk by chunk without combining or padding: the only copy made is the result."""
    dim = column.type.value_type.list_size
    chunk_of = np.zeros(column.num_chunks + 1, np.int64)
    chunk_of[1:] = np.cumsum([len(c) for c in column.chunks])
    rows = np.asarray(rows, np.int64)
    which = np.searchsorted(chunk_of, rows, side="right") - 1
    lens = np.zeros(len(rows), np.int64)
    for c, chunk in enumerate(column.chunks):
        sel = which == c
        if sel.any():
            off = chunk.offsets.to_numpy()
            local = rows[sel] - chunk_of[c]
            lens[sel] = off[local + 1] - off[local]
    empty = np.nonzero(lens == 0)[0]
    if len(empty):
        raise ValueError(f"{where}: text #{int(empty[0])} has no word tokens (field 'tokens')")
    length = max(1, min(int(max_len), int(lens.max(initial=1))))
    lens = np.minimum(lens, length)
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum(lens)
    flat = np.empty((int(offsets[-1]), dim), np.float32)
    for c, chunk in enumerate(column.chunks):
        # chunk.values: every token of the chunk (its offsets index into it), zero-copy as numpy
        values = chunk.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        chunk_offsets = chunk.offsets.to_numpy()
        for block in _blocks_of(np.nonzero(which == c)[0], 4096):  # bounded temporaries
            n_tok = lens[block]
            pos = np.repeat(offsets[block] - np.cumsum(n_tok) + n_tok, n_tok) + np.arange(int(n_tok.sum()))
            starts = chunk_offsets[rows[block] - chunk_of[c]]
            flat[pos] = values[np.repeat(starts - offsets[block], n_tok) + pos]
    return TokenRows(flat, offsets, length)


def _blocks_of(index: np.ndarray, size: int) -> list[np.ndarray]:
    return [index[i: i + size] for i in range(0, len(index), size)]


@dataclass
class SplitData:
    """One split's training arrays (rows = English captions; images indexed by ``image_index``)."""

    split: str
    caption_ids: list[str]             # English caption ids
    target_ids: list[str]              # MT caption ids, or the English ids when there is no MT
    image_ids: list[str]               # unique images of the split
    image_index: np.ndarray            # (n,) row -> image
    s_pooled: np.ndarray               # (n, Dt) English
    t_pooled: np.ndarray               # (n, Dt) target branch (MT or English)
    img_pooled: np.ndarray             # (m, Di)
    img_tokens: np.ndarray | None      # (m, T, Di)
    desc: np.ndarray | None            # (m, V, Dt) description views, zero-padded
    desc_mask: np.ndarray | None       # (m, V) True for real views
    s_tokens: TokenRows | None = None  # word tokens of the English / target rows (teacher terms only)
    t_tokens: TokenRows | None = None
    has_mt: bool = False


def _no_features(path: Path, what: str, missing: list[str]) -> KeyError:
    return KeyError(f"{path} ({what}): {len(missing)} id(s) have no features, e.g. {missing[:3]}")


def _ragged_rows(path: Path, ids: list[str], max_len: int, what: str,
                 allow_missing: bool = False) -> tuple[list[str], np.ndarray, TokenRows]:
    """``ids`` (without those the table lacks, if ``allow_missing``), their pooled vectors and their
    word tokens, from the text feature table ``path`` (columns checked by the caller)."""
    table = read_rows(path, "caption_id", ids, ["caption_id", "pooled", "tokens"])
    row_of = {k: i for i, k in enumerate(table.column("caption_id").to_pylist())}
    if allow_missing:
        ids = [i for i in ids if i in row_of]
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise _no_features(path, what, missing)
    rows = np.array([row_of[i] for i in ids], dtype=np.int64)
    pooled, tokens = to_matrix(table.column("pooled"))[rows], token_rows(table.column("tokens"), rows, max_len, str(path))
    del table
    pa.default_memory_pool().release_unused()  # the Arrow pages read are free again: give them back
    return list(ids), pooled, tokens


def read_feature_rows(path: Path | str, ids: list[str], with_tokens: bool, what: str,
                      allow_missing: bool = False) -> Features:
    """Features of exactly ``ids`` (in that order); other rows are filtered out while reading.

    A missing id is a KeyError naming the file, unless ``allow_missing`` (then it is skipped).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: feature table not found: {path}")
    schema = pq.read_schema(path)
    key = "image_id" if "image_id" in schema.names else "caption_id"
    if key not in schema.names or "pooled" not in schema.names:
        raise TableError(f"{path}: not a feature table (needs '{key}' and 'pooled')")
    if with_tokens and "tokens" not in schema.names:
        raise TableError(f"{path}: field 'tokens' is missing but {what} needs token features")
    columns = [key, "pooled"] + (["tokens"] if with_tokens else [])
    if not ids:
        return Features(ids=[], pooled=np.zeros((0, schema.field("pooled").type.list_size), np.float32))
    if with_tokens and not pa.types.is_fixed_size_list(schema.field("tokens").type):  # ragged text tokens
        ids, pooled, ragged = _ragged_rows(path, ids, np.iinfo(np.int64).max, what, allow_missing)
        return Features(ids=ids, pooled=pooled, token_list=[ragged.flat[a:b] for a, b in
                                                            zip(ragged.offsets[:-1], ragged.offsets[1:], strict=True)])
    found, arrays = read_fixed_rows(path, key, ids, columns[1:])  # vectors, image grids
    if not found.all():
        missing = [i for i, ok in zip(ids, found, strict=True) if not ok]
        if not allow_missing:
            raise _no_features(path, what, missing)
        ids = [i for i, ok in zip(ids, found, strict=True) if ok]
        arrays = {c: a[found] for c, a in arrays.items()}
    return Features(ids=list(ids), pooled=arrays["pooled"], tokens=arrays.get("tokens"))


def read_text_token_rows(path: Path | str, ids: list[str], max_len: int, what: str) -> tuple[np.ndarray, TokenRows]:
    """Pooled vectors (n, D) and word tokens (:class:`TokenRows`) of exactly ``ids`` (in that order) from
    the text feature table ``path``; a missing id is a KeyError naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: feature table not found: {path}")
    names = pq.read_schema(path).names
    if "caption_id" not in names or "pooled" not in names:
        raise TableError(f"{path}: not a text feature table (needs 'caption_id' and 'pooled')")
    if "tokens" not in names:
        raise TableError(f"{path}: field 'tokens' is missing but {what} needs token features")
    _, pooled, tokens = _ragged_rows(path, ids, max_len, what)
    return pooled, tokens


def _check_split(split: str) -> None:
    if split not in TRAIN_SPLITS:
        raise LeakageError(f"training data may only come from splits {TRAIN_SPLITS}, asked for {split!r}")


def read_english_captions(path: Path | str, split: str) -> pa.Table:
    """English human captions of ``split`` only (filtered while reading, then asserted)."""
    _check_split(split)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"captions table not found: {path} (TrainInputs.captions)")
    table = pq.read_table(path, filters=[("lang", "==", "en"), ("origin", "==", "human"), ("split", "==", split)])
    table = validate_captions(table, where=str(path))
    if table.num_rows and not (set(table.column("lang").to_pylist()) == {"en"}
                               and set(table.column("origin").to_pylist()) == {"human"}
                               and set(table.column("split").to_pylist()) == {split}):
        raise LeakageError(f"{path}: loader let through a non-English/non-human/non-{split} caption")
    return table


MULTI = "multi"  # the training language of a student trained on the MT of several languages together


def read_translations(path: Path | str, lang: str, split: str) -> pa.Table:
    """MT rows (``origin == "mt"``, ``lang == lang``, any language for ``lang == "multi"``) of ``split`` only."""
    _check_split(split)
    path = Path(path)
    filters = [("origin", "==", "mt"), ("split", "==", split)] + ([("lang", "==", lang)] if lang != MULTI else [])
    table = pq.read_table(path, filters=filters)
    table = validate_captions(table, where=str(path))
    if table.num_rows and not (set(table.column("origin").to_pylist()) == {"mt"}
                               and set(table.column("split").to_pylist()) == {split}):
        raise LeakageError(f"{path}: loader let through a non-MT or non-{split} row")
    if table.column("source_id").null_count:
        raise TableError(f"{path}: field 'source_id' is null for some MT rows")
    return table


def _translated_pairs(path: Path | str, lang: str, split: str, cap_ids: list[str], cap_imgs: list[str],
                      what: str) -> list[tuple[str, str, str]]:
    """(English caption, image, translation) rows: every translation in the MT table ``path`` (rows of
    ``lang``, any language for ``multi``) of each English caption of ``split``; a caption without one is an
    error naming the file and field."""
    mt = read_translations(path, lang, split)
    targets_of: dict[str, list[str]] = {}
    for source, cid in zip(mt.column("source_id").to_pylist(), mt.column("caption_id").to_pylist(), strict=True):
        targets_of.setdefault(source, []).append(cid)
    lacking = [c for c in cap_ids if c not in targets_of]
    if lacking:
        raise ValueError(f"{path}: {len(lacking)} {split} English caption(s) have no {what} "
                         f"(field 'source_id'), e.g. {lacking[:3]}")
    return [(c, img, t) for c, img in zip(cap_ids, cap_imgs, strict=True) for t in sorted(targets_of[c])]


def _proxy_pairs(inputs: TrainInputs, split: str, cap_ids: list[str],
                 cap_imgs: list[str]) -> list[tuple[str, str, str]]:
    """The proxy MT's rows (:func:`_translated_pairs` of ``inputs.proxy_translations``)."""
    if inputs.proxy_translations is None or inputs.proxy_translation_features is None:
        raise ValueError("param 'proxy_mt' is true but TrainInputs.proxy_translations / proxy_translation_features "
                         "is None (configure a proxy: languages.<query set>.proxy)")
    path = Path(inputs.proxy_translations)
    if not path.exists():
        raise FileNotFoundError(f"proxy translations table not found: {path} (TrainInputs.proxy_translations)")
    return _translated_pairs(path, MULTI, split, cap_ids, cap_imgs, "proxy translation")


def read_split_images(path: Path | str, split: str) -> list[str]:
    _check_split(split)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"images table not found: {path} (TrainInputs.images)")
    table = validate_images(pq.read_table(path, filters=[("split", "==", split)]), where=str(path))
    if table.num_rows and set(table.column("split").to_pylist()) != {split}:
        raise LeakageError(f"{path}: loader let through a non-{split} image")
    return table.column("image_id").to_pylist()


def description_ids(inputs: TrainInputs, image_ids: list[str], split: str | None) -> dict[str, list[str]]:
    """image_id -> its description caption ids (ordered by view index k).

    Uses the descriptions table (filtered to ``split`` while reading) when given, else the ids of the
    description feature table.
    """
    wanted = set(image_ids)
    pairs: list[tuple[str, str]] = []
    if inputs.descriptions is not None:
        path = Path(inputs.descriptions)
        if not path.exists():
            raise FileNotFoundError(f"descriptions table not found: {path} (TrainInputs.descriptions)")
        filters = [("origin", "==", "description")] + ([("split", "==", split)] if split else [])
        table = validate_captions(pq.read_table(path, filters=filters), where=str(path))
        if split and table.num_rows and set(table.column("split").to_pylist()) != {split}:
            raise LeakageError(f"{path}: loader let through a non-{split} description")
        pairs = list(zip(table.column("image_id").to_pylist(), table.column("caption_id").to_pylist(), strict=True))
    elif inputs.description_features is not None:
        ids = pq.read_table(inputs.description_features, columns=["caption_id"]).column("caption_id").to_pylist()
        pairs = [(cid.rpartition("#desc")[0], cid) for cid in ids if "#desc" in cid]
    out: dict[str, list[str]] = {i: [] for i in image_ids}
    for img, cid in pairs:
        if img in wanted:
            out[img].append(cid)

    def view(cid: str) -> int:
        tail = cid.rpartition("#desc")[2]
        return int(tail) if tail.isdigit() else 0

    return {k: sorted(v, key=lambda c: (view(c), c)) for k, v in out.items()}


def load_descriptions(inputs: TrainInputs, image_ids: list[str], split: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(m, V, Dt) description-view features (zero padded) and mask (m, V) for ``image_ids``."""
    if inputs.description_features is None:
        raise ValueError("TrainInputs.description_features is None but description views are needed "
                         "(semantic slots or the zero-shot system)")
    per_image = description_ids(inputs, image_ids, split)
    missing = [i for i in image_ids if not per_image[i]]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no description views in "
                         f"{inputs.descriptions or inputs.description_features}, e.g. {missing[:3]}")
    flat = [c for i in image_ids for c in per_image[i]]
    feats = read_feature_rows(inputs.description_features, flat, False, "description features")
    views = max(len(per_image[i]) for i in image_ids) if image_ids else 1
    out = np.zeros((len(image_ids), views, feats.pooled.shape[1]), np.float32)
    mask = np.zeros((len(image_ids), views), bool)
    row = 0
    for m, img in enumerate(image_ids):
        k = len(per_image[img])
        out[m, :k] = feats.pooled[row: row + k]
        mask[m, :k] = True
        row += k
    return out, mask


def load_split(inputs: TrainInputs, split: str, *, use_mt: bool = True, text_tokens: bool = False,
               images: bool = True, image_tokens: bool = True, descriptions: bool = True,
               max_text_tokens: int = 32, backtranslations: bool = True, proxy_mt: bool = False) -> SplitData:
    """Everything training needs from ``split`` ("train" or "val"), leakage-guarded.

    ``images=False`` (the text-only teacher) reads no image features (``img_pooled`` is then (m, 0)).
    With ``inputs.backtranslations`` (and ``backtranslations``), each back-translated English
    paraphrase is one more row: its English side is the paraphrase, its target side what its source
    caption's is (NRCCR's noisy English augmentation).
    With ``proxy_mt``, each English caption's translations in ``inputs.proxy_translations`` (MT into a
    language related to a query language that has none) are more rows after the MT's, as MT rows are.
    """
    _check_split(split)
    caps = read_english_captions(inputs.captions, split)
    if caps.num_rows == 0:
        raise ValueError(f"{inputs.captions}: no English human captions in split '{split}'")
    split_images = set(read_split_images(inputs.images, split))
    cap_ids = caps.column("caption_id").to_pylist()
    cap_imgs = caps.column("image_id").to_pylist()
    stray = sorted({i for i in cap_imgs if i not in split_images})
    if stray:
        raise TableError(f"{inputs.captions}: field 'image_id' of {split} captions names images that are not "
                         f"{split} images in {inputs.images}, e.g. {stray[:3]}")
    has_mt = use_mt and inputs.has_translations()
    n_mt = 0
    if has_mt:
        # one row per (English caption, one of its translations): several with MT in several languages
        pairs = _translated_pairs(inputs.translations, inputs.lang, split, cap_ids, cap_imgs,
                                  f"{inputs.lang} translation")
        n_mt = len(pairs)  # rows whose target is the MT; the proxy MT's rows follow
        if proxy_mt:
            if backtranslations and inputs.backtranslations is not None:
                raise ValueError("param 'proxy_mt' with back-translations: the two are not combined; use one of them")
            pairs += _proxy_pairs(inputs, split, cap_ids, cap_imgs)
        cap_ids, cap_imgs, target_ids = (list(col) for col in zip(*pairs, strict=True))
    elif proxy_mt:
        raise ValueError(f"param 'proxy_mt' is true but there is no MT into '{inputs.lang}' to add the proxy MT "
                         f"to ({inputs.translations or 'TrainInputs.translations is None'})")
    else:
        target_ids = list(cap_ids)
    n_human = len(cap_ids)
    if backtranslations and inputs.backtranslations is not None and split == "train":
        bt = read_translations(inputs.backtranslations, "en", split)  # MT rows into English
        rows_of: dict[str, list[int]] = {}
        for row, c in enumerate(cap_ids):
            rows_of.setdefault(c, []).append(row)
        extra = [(b, cap_imgs[row], target_ids[row]) for b, c in zip(bt.column("caption_id").to_pylist(),
                                                                     bt.column("source_id").to_pylist(), strict=True)
                 for row in rows_of.get(c, [])]
        if extra:
            if inputs.backtranslation_features is None:
                raise ValueError("TrainInputs.backtranslation_features is None but back-translations are given")
            cap_ids = cap_ids + [b for b, _, _ in extra]
            cap_imgs = cap_imgs + [img for _, img, _ in extra]
            target_ids = target_ids + [t if has_mt else b for b, _, t in extra]
    image_ids = sorted(set(cap_imgs))
    pos = {k: i for i, k in enumerate(image_ids)}
    def text_rows(path: Path, ids: list[str], what: str) -> tuple[np.ndarray, TokenRows | None]:
        if text_tokens:
            return read_text_token_rows(path, ids, max_text_tokens, what)
        return read_feature_rows(path, ids, False, what).pooled, None

    s_pooled, s_tokens = text_rows(inputs.caption_features, cap_ids[:n_human], "caption features")
    if len(cap_ids) > n_human:  # the paraphrases' English side comes from their own feature table
        p_pooled, p_tokens = text_rows(inputs.backtranslation_features, cap_ids[n_human:], "back-translation features")
        s_pooled = np.concatenate([s_pooled, p_pooled])
        s_tokens = None if s_tokens is None or p_tokens is None else s_tokens.concat(p_tokens)
    if has_mt:
        if inputs.translation_features is None:
            raise ValueError("TrainInputs.translation_features is None but the translations table is not empty")
        t_pooled, t_tokens = text_rows(inputs.translation_features, target_ids[:n_mt] if proxy_mt else target_ids,
                                       "translation features")
        if proxy_mt:
            x_pooled, x_tokens = text_rows(inputs.proxy_translation_features, target_ids[n_mt:],
                                           "proxy translation features")
            t_pooled = np.concatenate([t_pooled, x_pooled])
            t_tokens = None if t_tokens is None or x_tokens is None else t_tokens.concat(x_tokens)
    else:  # no MT: the target branch reads the English side (paraphrases included)
        t_pooled, t_tokens = s_pooled, s_tokens
    img_pooled, img_tokens = np.zeros((len(image_ids), 0), np.float32), None
    if images:
        if inputs.image_features is None:
            raise ValueError("TrainInputs.image_features is None but the student needs image features")
        with_tok = image_tokens and "tokens" in pq.read_schema(inputs.image_features).names
        img = read_feature_rows(inputs.image_features, image_ids, with_tok, "image features")
        img_pooled, img_tokens = img.pooled, img.tokens
    desc = desc_mask = None
    if descriptions:
        desc, desc_mask = load_descriptions(inputs, image_ids, split)
    data = SplitData(split=split, caption_ids=cap_ids, target_ids=target_ids, image_ids=image_ids,
                     image_index=np.array([pos[i] for i in cap_imgs], np.int64), s_pooled=s_pooled,
                     t_pooled=t_pooled, img_pooled=img_pooled, img_tokens=img_tokens, desc=desc,
                     desc_mask=desc_mask, s_tokens=s_tokens, t_tokens=t_tokens, has_mt=has_mt)
    log.info("%s data: %d English captions (%s), %d images, %s description views", split, len(cap_ids),
             (f"with {inputs.lang} MT" + (f", {len(target_ids) - n_mt} of them proxy MT" if proxy_mt else ""))
             if has_mt else "no MT: target branch = English", len(image_ids),
             "no" if desc is None else desc.shape[1])
    return data
