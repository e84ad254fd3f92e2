#!/bin/sh
# Build step of the Dockerfile (stage "models"); tests/test_deploy_image.py runs it too.
#   import-models.sh image DIR   import every DIR/*.bentomodel into $BENTOML_HOME (at least one)
#   import-models.sh volume DIR  import nothing: a model store is mounted at run time
set -eu
mode=$1
dir=$2
mkdir -p "$BENTOML_HOME/models"
case "$mode" in
    volume)
        echo "MODELS=volume: no model in the image; mount a model store at $BENTOML_HOME/models"
        exit 0
        ;;
    image) ;;
    *)
        echo "MODELS=$mode: must be image or volume" >&2
        exit 2
        ;;
esac
found=0
for file in "$dir"/*.bentomodel; do
    [ -e "$file" ] || continue
    bentoml models import "$file"
    found=$((found + 1))
done
if [ "$found" -eq 0 ]; then
    echo "MODELS=image but $dir holds no .bentomodel file: export the trained models first" \
        "(docs/DEPLOY.md), or build with --build-arg MODELS=volume" >&2
    exit 1
fi
# bentoml creates each version folder 0700: the serving user (not root) must read them all.
chmod -R a+rX "$BENTOML_HOME/models"
bentoml models list
