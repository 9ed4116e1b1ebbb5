"""Importers that turn published CCR benchmarks into the project's ``images`` / ``captions`` tables.

Each module exposes ``build(out_dir, seed, **params) -> (images, captions)``; ``ccr.data.prepare``
registers them lazily under the config's ``dataset.source`` names (see ``docs/importers.md``):

* ``multi30k``: Multi30K task1/task2 as published (plus the M30K-F8K split protocol),
* ``nrccr``: the NRCCR / LECCR ``TextData`` caption files (English, MT and human target captions),
* ``coco``: Karpathy-style ``dataset_coco.json`` plus STAIR / COCO-CN style extra captions,
* ``manifest``: a generic CSV / JSONL / Parquet manifest.

Builders return validated tables and write nothing partial; each logs a report of what it found
and what it skipped (and why).
"""
