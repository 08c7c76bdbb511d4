# One image for every service of the project: `fastdistill serve STEP`, `fastdistill teacher-sim`,
# `fastdistill topics create`, `fastdistill produce FILE` all run from it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FD_METRICS_PORT=9100

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that editing the code does not re-download
# them. confluent-kafka (librdkafka inside) and pyarrow ship manylinux wheels: no compiler needed.
COPY pyproject.toml ./
RUN python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])"

COPY . .
# Editable: the pipeline YAML, the schemas and the example database stay where the relative paths
# of examples/text2sql/pipeline.yaml (the default FD_PIPELINE) expect them, under /app.
RUN pip install -e . \
    && useradd --create-home --uid 10001 --user-group fastdistill \
    && mkdir -p /app/out /app/.cache \
    && chown -R fastdistill:fastdistill /app/out /app/.cache

# Not root: a service only writes its dataset/report folder (out/, a volume in compose).
USER fastdistill

# Every service answers /healthz on FD_METRICS_PORT; the probe is stdlib Python because the slim
# image has no curl. Services with another port (the teacher simulator) pass their own URL.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]

EXPOSE 9100
CMD ["fastdistill", "--help"]
