# optline: a small, non-root image with only what serving needs (no dev extras).
# The base is pinned to an exact release; bump it deliberately (and rebuild) for security updates.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    OPTLINE_ENV=production OPTLINE_HOST=0.0.0.0 OPTLINE_PORT=8000
# The consent proof's PDF needs a Unicode font (entrypoints/proof_formats.py).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /app --create-home optline
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER optline
WORKDIR /app
EXPOSE 8000
# /readyz: the schema is migrated and the database answers (what an orchestrator should route on).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["optline", "serve"]
