# camlabel image: web (gunicorn) and Celery workers share it; the GPU worker needs the
# NVIDIA container runtime (the pinned torch wheel from PyPI is a CUDA build).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CAMLABEL_DATA_DIR=/data

WORKDIR /app
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md alembic.ini ./
COPY camcore ./camcore
COPY worker ./worker
COPY web ./web
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .

RUN useradd --create-home --uid 1000 camlabel && mkdir -p /data && chown camlabel /data
USER camlabel
VOLUME ["/data"]
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "4", "--timeout", "120", "web:create_app()"]
