# syntax=docker/dockerfile:1
# dlserve serving image: the BentoML service (service/ and core/ only) on ONNX Runtime.
# No torch, no compiler, no training code: Python packages come from the generated
# deploy/requirements-serve*.txt only, as wheels. See docs/DEPLOY.md.
#
#   docker build -t dlserve:gpu .                                # CUDA 13.0 + cuDNN 9 (default)
#   docker build --build-arg RUNTIME=cpu -t dlserve:cpu .        # CPU only, python:3.11-slim
#   docker build --build-arg MODELS=volume -t dlserve:gpu-store .  # models mounted at run time
#
# RUNTIME=gpu: the pinned onnxruntime-gpu==1.31.1 wheel is built for CUDA 13.0 (its CUDA
# provider links libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10; its
# "cuda" extra asks for nvidia-cuda-runtime~=13.0, nvidia-cufft~=12.0) and cuDNN 9 (its
# "cudnn" extra: nvidia-cudnn-cu13~=9.0). Hence NVIDIA's CUDA 13.0 runtime image with cuDNN 9;
# the node needs a driver that supports CUDA 13 (R580 or newer). Its Python is Ubuntu 24.04's
# (3.12). RUNTIME=cpu: Python 3.11 on Debian slim, onnxruntime==1.31.1.
#
# BuildKit (Docker's default builder since 23.0) builds only the stages the chosen RUNTIME
# needs; the legacy builder would also pull the other base image.
#
# MODELS=image (default): every deploy/models/*.bentomodel (`bentoml models export` files, see
# deploy/models/README.md) is imported into the image's model store at build time; the build
# fails when there is none. MODELS=volume: the image holds no model; mount a BentoML model
# store at /var/lib/dlserve/bentoml/models at run time.

ARG RUNTIME=gpu
ARG MODELS=image
# BATCH_ENGINE=ray adds deploy/requirements-ray.txt (the batch job's Ray engine, for
# deploy/k8s/batch/rayjob.yaml); the serving image does not need it.
ARG BATCH_ENGINE=local
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- runtime bases: the OS, Python and tini; DLSERVE_PROVIDER follows the image ----
FROM ${PYTHON_IMAGE} AS base-cpu
# DL3008: apt packages come from the base image's release, whose security updates replace
# exact versions (a pinned version disappears from the archive and breaks the build).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
ENV DLSERVE_PROVIDER=cpu

FROM ${CUDA_IMAGE} AS base-gpu
# DL3008: as above (Ubuntu 24.04's python3 and tini).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tini \
    && rm -rf /var/lib/apt/lists/*
# cuda: required, so a container without a usable GPU is never silently on CPU (/readyz 503).
ENV DLSERVE_PROVIDER=cuda

# ---- build stages: a virtual environment with the serving requirements, as wheels ----
FROM base-cpu AS venv-cpu
ENV REQUIREMENTS=requirements-serve.txt
RUN python3 -m venv /opt/venv

FROM base-gpu AS venv-gpu
ENV REQUIREMENTS=requirements-serve-gpu.txt
# DL3008: as above; python3-venv (ensurepip) exists in this build stage only.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# DL3006: venv-cpu and venv-gpu are stages of this file, not images to tag.
# ${RUNTIME:-gpu} repeats the default of ARG RUNTIME: buildah (podman build) picks the stages to
# build from the --build-arg values alone, and with RUNTIME left out it would skip venv-gpu.
# hadolint ignore=DL3006
FROM venv-${RUNTIME:-gpu} AS build
ARG BATCH_ENGINE
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BENTOML_DO_NOT_TRACK=true
COPY deploy/requirements-serve.txt deploy/requirements-serve-gpu.txt deploy/requirements-ray.txt \
    /tmp/deploy/
# --only-binary: never a compiler. The generated requirement files are all that is installed
# (BATCH_ENGINE=ray: the Ray file joins the same resolution); pip itself goes after.
RUN case "${BATCH_ENGINE}" in local|ray) ;; *) echo "BATCH_ENGINE: local or ray" >&2; exit 2;; esac \
    && if [ "${BATCH_ENGINE}" = ray ]; then \
        echo "-r requirements-ray.txt" >> "/tmp/deploy/${REQUIREMENTS}"; fi \
    && pip install --no-cache-dir --only-binary=:all: -r "/tmp/deploy/${REQUIREMENTS}" \
    && pip uninstall -y pip

# ---- models: the image's model store (MODELS=image) or an empty one (MODELS=volume) ----
FROM build AS models
ARG MODELS
ENV BENTOML_HOME=/var/lib/dlserve/bentoml
COPY deploy/models/ /tmp/models/
COPY deploy/docker/import-models.sh /usr/local/bin/import-models.sh
RUN sh /usr/local/bin/import-models.sh "${MODELS}" /tmp/models

# ---- the image ----
# DL3006: base-cpu and base-gpu are stages of this file, not images (default: as for build).
# hadolint ignore=DL3006
FROM base-${RUNTIME:-gpu} AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" dlserve \
    && useradd --system --uid "${UID}" --gid "${UID}" --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin dlserve
# BENTOML_HOME/models is read-only (root-owned). What BentoML and dlserve write at run time:
# BENTOML_HOME/tmp, BENTOML_HOME/prometheus_multiproc_dir (per-worker metrics), the task result
# store (BENTOML_RESULT_STORE) and HTTP batch jobs (DLSERVE_BATCH_DIR), and /tmp (uploads):
# owned by the user here, emptyDir volumes under Kubernetes' read-only root filesystem.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BENTOML_HOME=/var/lib/dlserve/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    BENTOML_RESULT_STORE=/var/lib/dlserve/batch/task_result.db \
    DLSERVE_BATCH_DIR=/var/lib/dlserve/batch \
    PYTHONPATH=/opt/dlserve
COPY --from=build /opt/venv /opt/venv
COPY --from=models /var/lib/dlserve/bentoml/models /var/lib/dlserve/bentoml/models
WORKDIR /opt/dlserve
COPY service/ service/
COPY core/ core/
RUN python3 -m compileall -q service core \
    && mkdir -p /var/lib/dlserve/bentoml/tmp /var/lib/dlserve/bentoml/prometheus_multiproc_dir \
        /var/lib/dlserve/bentoml/bentos /var/lib/dlserve/bentoml/envs /var/lib/dlserve/batch \
    && chown "${UID}:${UID}" /var/lib/dlserve/bentoml /var/lib/dlserve/bentoml/tmp \
        /var/lib/dlserve/bentoml/prometheus_multiproc_dir /var/lib/dlserve/batch
USER ${UID}:${UID}
# 3000: HTTP (the API, the probes, /metrics); 8001: the Open Inference Protocol over gRPC
# (DLSERVE_GRPC_PORT, Triton's convention).
EXPOSE 3000 8001
# /livez: the process answers (readiness, i.e. models loaded, is /readyz: Kubernetes probes it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/livez', timeout=4)"]
# tini is PID 1: it forwards SIGTERM to bentoml serve, its direct child, which stops accepting
# connections and lets in-flight requests finish before its workers exit; tini reaps zombies.
# 0.0.0.0 on purpose: inside the container the port is only reachable through the runtime's
# port mapping or the Kubernetes Service. `args` (Kubernetes) or a docker run command replace
# CMD, e.g. `python -m service.batch ...` for batch jobs, still under tini.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["bentoml", "serve", "service.service:DLServe", "--host", "0.0.0.0", "--port", "3000"]
