# The flow worker image: Prefect worker + the tuneops flows, components and their locked
# dependencies. It runs the retrain and monitor deployments (infra/prefect.yaml) on a process
# work pool (docker compose) or as the job image of a Kubernetes work pool (infra/kubernetes/).
#
#   docker build -f docker/worker.Dockerfile -t tuneops-worker:0.1.0 .
#
# State (model store, champion pointer, prediction log, Evidently workspace) lives in /data,
# a volume shared with the serving image.
FROM python:3.11.11-slim-bookworm

# The hub is off by default, so a cluster without egress never stalls on it; hub-id candidates
# then train only from the Hugging Face cache. Switch it on with --build-arg HF_HUB_OFFLINE=0,
# or per run with HF_HUB_OFFLINE=0 in the environment (docker/README.md).
ARG HF_HUB_OFFLINE=1
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUNEOPS_HOME=/data \
    BENTOML_HOME=/data/bentoml \
    PREFECT_HOME=/data/prefect \
    TUNEOPS_PROJECT_DIR=/opt/tuneops \
    DO_NOT_TRACK=1 \
    BENTOML_DO_NOT_TRACK=true \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    TOKENIZERS_PARALLELISM=false \
    OMP_WAIT_POLICY=PASSIVE

RUN useradd --create-home --uid 10001 tuneops \
    && mkdir -p /data /opt/tuneops \
    && chown tuneops:tuneops /data /opt/tuneops
WORKDIR /opt/tuneops

# Dependencies first, so code changes do not reinstall them. torch is pinned without a local
# label; the CPU index offers 2.13.0+cpu, which pip prefers and which keeps the image ~3 GB
# smaller. A GPU worker image leaves the extra index out.
COPY requirements.lock ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock

COPY pyproject.toml README.md __init__.py ./
COPY components ./components
COPY flows ./flows
COPY serving ./serving
COPY infra ./infra
RUN pip install --no-deps -e . && chown -R tuneops:tuneops /opt/tuneops

USER tuneops
VOLUME ["/data"]

# PREFECT_API_URL comes from the environment (compose / the Kubernetes manifests).
CMD ["prefect", "worker", "start", "--pool", "tuneops-process", "--type", "process"]
