#!/usr/bin/env bash
# Snakemake runs <env>.post-deploy.sh inside the conda env it has just created (every env here has an identical
# copy: Snakemake copies the script on its own, so it cannot source a shared one). It installs this workflow's own
# library, ccr, without dependencies: the env file pins those. Where the source is, in this order:
#   1. $CCR_SOURCE: the repository folder (editable install) or a pip URL such as git+https://...@<tag>;
#   2. the working directory, when Snakemake runs from a clone of the repository.
# See workflow/envs/README.md.
set -euo pipefail

src="${CCR_SOURCE:-}"
if [ -z "$src" ] && [ -f pyproject.toml ] && grep -q '^name = "ccr"$' pyproject.toml; then
  src="$PWD"
fi
if [ -z "$src" ]; then
  echo "ccr post-deploy: cannot find the ccr library source for the conda env at ${CONDA_PREFIX:-?}." >&2
  echo "  Set CCR_SOURCE to the ccr repository folder (or a pip URL: git+https://<host>/<owner>/ccr@<tag>)" >&2
  echo "  and rerun snakemake --use-conda (see workflow/envs/README.md)." >&2
  exit 1
fi
# --no-build-isolation: setuptools is pinned in the env, so nothing is fetched to build ccr.
if [ -d "$src" ]; then
  # Editable: the env follows the checked-out code. Snakemake rebuilds an env only when its file changes, so a
  # copied (non-editable) install would silently keep old library code.
  python -m pip install --no-deps --no-build-isolation --disable-pip-version-check --quiet -e "$src"
else
  python -m pip install --no-deps --no-build-isolation --disable-pip-version-check --quiet "$src"
fi
python -c 'import ccr, sys; print("ccr post-deploy: ccr from", ccr.__file__, "in", sys.prefix)'
