# Two images from one file:
#   service (the default target): the decision service, the console, the trainer and Dask's
#     scheduler and workers; no torch, no Ax
#   tuner: the same plus Ax and torch's CPU wheel, for `closedloop tune` (the only job that needs them)
# Both run as an unprivileged user; .dockerignore keeps .venv, .git and local data out of the context.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --create-home --uid 10001 closedloop \
    && mkdir -p /var/lib/closedloop \
    && chown closedloop:closedloop /var/lib/closedloop
WORKDIR /app
COPY . .

FROM base AS tuner
# torch's CPU wheel before Ax, or pip pulls the CUDA build and gigabytes with it.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install ".[tuner]"
USER closedloop
CMD ["closedloop", "tune", "--help"]

FROM base AS service
# distributed: the trainer's engine: dask, and the image of the compose profile's Dask workers
RUN pip install ".[trainer,distributed,evaluation]"
USER closedloop
EXPOSE 8000 8001
CMD ["closedloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
