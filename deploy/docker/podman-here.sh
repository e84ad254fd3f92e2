#!/bin/sh
# Build and run the image with podman and buildah from Debian, without a Docker engine or Docker
# Hub: what CI (tests/test_container.py) and a developer's machine both run. See docs/DEPLOY.md.
#
#   podman-here.sh base                          the Dockerfile's PYTHON_IMAGE, made from Debian
#                                                packages (mmdebstrap), imported once
#   podman-here.sh build RUNTIME MODELS TAG [CONTEXT]   podman build (CONTEXT: default the repo)
#   podman-here.sh podman ARGS...                any podman command with the same settings
#
# Settings for sandboxes like CI's, in a containers.conf of our own (CONTAINERS_CONF; /etc is
# left alone): the hard open-files limit as podman's ulimits (root without CAP_SYS_RESOURCE
# cannot raise it), runc (crun refuses hybrid cgroups), cgroupfs and file events (no systemd).
# The machine's CA bundle is mounted for the build only (a TLS-inspecting proxy may sit
# between the build and PyPI), never copied into the image.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${DLSERVE_CONTAINERS_DIR:-${TMPDIR:-/tmp}/dlserve-containers}
mkdir -p "$state"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
cat > "$state/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$state/containers.conf"

# The Dockerfile's default base image name (ARG PYTHON_IMAGE=...).
python_image() {
    sed -n 's/^ARG PYTHON_IMAGE=//p' "$repo/Dockerfile"
}

case "${1:-}" in
    base)
        name=$(python_image)
        if podman image exists "$name"; then
            echo "$name: present"
            exit 0
        fi
        # Debian's release and Python minor stand in for the python:3.11-slim-bookworm image.
        mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            bookworm "$state/base.tar"
        podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
            "$state/base.tar" "$name"
        rm -f "$state/base.tar"
        ;;
    build)
        [ $# -ge 4 ] || { echo "usage: $0 build RUNTIME MODELS TAG [CONTEXT]" >&2; exit 2; }
        ca=/etc/ssl/certs/ca-certificates.crt
        set -- --build-arg "RUNTIME=$2" --build-arg "MODELS=$3" -t "$4" "${5:-$repo}"
        [ -f "$ca" ] && set -- -v "$ca:$ca:ro" "$@"
        # docker format: the OCI format drops HEALTHCHECK. --pull=never: no registry is needed.
        exec podman build --format docker --network=host --pull=never "$@"
        ;;
    podman)
        shift
        exec podman "$@"
        ;;
    *)
        echo "usage: $0 base | build RUNTIME MODELS TAG [CONTEXT] | podman ARGS..." >&2
        exit 2
        ;;
esac
