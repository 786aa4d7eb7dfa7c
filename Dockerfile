# The application image: the worker, the web app and the command line (docker-compose.yml runs each).
# It holds the application and its runtime dependencies only, installed from requirements.lock with their
# hashes: not the embedded stack's dev servers, not the tests. .dockerignore keeps keys, .env files and
# state folders out of the build context (tests/test_image.py checks both files).
FROM python:3.11-slim AS build
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_JSON=true
RUN useradd --system --uid 10001 --create-home --home-dir /home/app app \
    && mkdir -p /var/lib/housing/witness /var/lib/housing/evidence /var/lib/bank \
    && chown -R app:app /var/lib/housing /var/lib/bank && chmod 700 /var/lib/housing/evidence
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . /app
USER app
CMD ["python", "worker.py"]
