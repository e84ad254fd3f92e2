#!/bin/sh
# Export the latest version of every declared model (the registry's list: the models the
# ConfigMap's DLSERVE_MODELS serves) from $BENTOML_HOME into DIR, for an image built with
# MODELS=image (default DIR: deploy/models, the build context's folder).
#   deploy/docker/export-models.sh [DIR]     PYTHON: the environment's python (default .venv's)
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
dir=${1:-$repo/deploy/models}
mkdir -p "$dir"
models=$(cd "$repo" && "$python" -m service.registry)
for model in $models; do
    rm -f "$dir/$model.bentomodel"  # bentoml refuses to overwrite an export
    "$python" -m bentoml models export "$model:latest" "$dir/$model.bentomodel"
done
echo "exported to $dir:" $models
