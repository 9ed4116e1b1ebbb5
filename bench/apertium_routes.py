"""Apertium routes on Multi30K VAL (never test): quality and speed of each en->fr route and of fr->en
back-translation, one stream per hop -> results/bench/apertium_routes.json.

Also lists every target language that has an offline route from English over the installed pairs.

    PYTHONPATH=src .venv/bin/python bench/apertium_routes.py [--limit 1014]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ccr.data.importers._common import read_lines
from ccr.translate.apertium import ApertiumTranslator, offline_targets
from ccr.translate.quality import mt_quality

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CCR_SHARED_DATA", REPO.parent / "shared" / "data"))


def run(translator: ApertiumTranslator, texts: list[str], src: str, tgt: str) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = translator.translate(texts, src, tgt)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N val sentences (default: all 1,014)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "apertium_routes.json")
    args = ap.parse_args()
    raw = DATA / "multi30k" / "task1" / "raw"
    en = read_lines(raw / "val.en.gz", "val en")[: args.limit]
    fr = read_lines(raw / "val.fr.gz", "val fr")[: args.limit]
    results = []
    for route in (["eng-spa", "es-fr"], ["eng-cat", "cat-fra"]):
        hyps, secs = run(ApertiumTranslator(route=route), en, "en", "fr")
        row = {"direction": "en->fr", "route": route, **mt_quality(hyps, fr), "seconds": round(secs, 2),
               "sentences_per_s": round(len(en) / secs, 1)}
        print(row)
        results.append(row)
    for route in (["fr-es", "spa-eng"], ["fra-cat", "cat-eng"]):
        hyps, secs = run(ApertiumTranslator(route=route), fr, "fr", "en")
        row = {"direction": "fr->en (back-translation of the human fr)", "route": route, **mt_quality(hyps, en),
               "seconds": round(secs, 2), "sentences_per_s": round(len(en) / secs, 1)}
        print(row)
        results.append(row)
    # round trip en -> fr -> en: how far a back-translated paraphrase is from the English it came from
    t = ApertiumTranslator()
    mt, _ = run(t, en, "en", "fr")
    bt, secs = run(t, mt, "fr", "en")
    row = {"direction": "en->fr->en round trip vs the English source", "route": list(t.route_for("en", "fr"))
           + list(t.route_for("fr", "en")), **mt_quality(bt, en), "seconds": round(secs, 2)}
    print(row)
    results.append(row)
    targets = {lang: list(r) for lang, r in offline_targets("en", t.installed_modes()).items()}
    report = {"data": "Multi30K task1 val (1,014 sentences); test is never read", "results": results,
              "offline_targets_from_en": targets}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
