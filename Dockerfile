# The application image: the worker and the command line. Used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY . .
RUN pip install --no-cache-dir . && useradd --create-home app
USER app
CMD ["python", "worker.py"]
