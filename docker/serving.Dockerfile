# The serving image: the BentoML service (serving/) and what it imports from components/, with
# the serving dependencies only (serving/requirements.txt; no Prefect, Evidently or GX).
#
#   docker build -f docker/serving.Dockerfile -t tuneops-serving:0.1.0 .
#   docker run -p 127.0.0.1:3000:3000 -v tuneops-data:/data tuneops-serving:0.1.0
#
# The image holds no model. It serves the champion named by the pointer in /data (TUNEOPS_HOME,
# a volume shared with the flow worker), from the model store in /data/bentoml, and follows
# promotions in place (see docs/serving.md); set TUNEOPS_SERVE_MODEL=<tag> to pin one model.
# For an immutable image with one model inside, build a bento instead (docker/README.md).
FROM python:3.11.11-slim-bookworm

# The hub is off by default: the service loads models from the volume only, and a cluster
# without egress would otherwise stall on hub look-ups. Switch it on with
# --build-arg HF_HUB_OFFLINE=0, or at run time with -e HF_HUB_OFFLINE=0 (docker/README.md).
ARG HF_HUB_OFFLINE=1
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUNEOPS_HOME=/data \
    BENTOML_HOME=/data/bentoml \
    DO_NOT_TRACK=1 \
    BENTOML_DO_NOT_TRACK=true \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    TOKENIZERS_PARALLELISM=false \
    OMP_WAIT_POLICY=PASSIVE

RUN useradd --create-home --uid 10001 tuneops \
    && mkdir -p /data /opt/tuneops \
    && chown tuneops:tuneops /data /opt/tuneops
WORKDIR /opt/tuneops

# Dependencies first, so code changes do not reinstall them. The lock file constrains the
# transitive dependencies to the versions the tests ran with. The CPU index gives torch's CPU
# wheel (~3 GB smaller); a GPU image leaves the extra index out.
COPY requirements.lock ./
COPY serving/requirements.txt ./serving/requirements.txt
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -r serving/requirements.txt -c requirements.lock

# The service imports tuneops.*: the package goes in as /opt/tuneops/tuneops (the working dir).
COPY __init__.py ./tuneops/__init__.py
COPY components ./tuneops/components
COPY serving ./tuneops/serving
RUN chown -R tuneops:tuneops /opt/tuneops

USER tuneops
VOLUME ["/data"]
EXPOSE 3000

# TUNEOPS_SERVING_CONFIG (the serving config section as JSON) and the token variable named by
# serving.auth_token_env (default TUNEOPS_API_TOKEN) come from the environment.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
CMD ["bentoml", "serve", "tuneops.serving.service:TuneopsClassifier", "--host", "0.0.0.0", "--port", "3000", "--working-dir", "/opt/tuneops"]
