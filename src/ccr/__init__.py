"""ccr: cross-lingual cross-modal retrieval (CL2CM + LECCR) as a reproducible pipeline.

Modules mirror the workflow's stages: ``data`` -> ``translate`` -> ``describe`` -> ``features``
-> ``models``/``train`` -> ``evaluate`` -> ``report``.
"""

__version__ = "0.1.0"
