# One image for every role: Ray head and workers (training, batch jobs), the Serve app, and
# the `vae` CLI (ENTRYPOINT). Multi-stage: the build stage installs into a venv that the
# small runtime stage copies; the runtime runs as a non-root user.
#
#   docker build -t vae-tables:cpu .                                   # CPU (default)
#   docker build -t vae-tables:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# The CUDA build differs only in the torch wheel: PyTorch's CUDA wheels bring their own CUDA
# libraries, so the base stays python:slim and the host needs only the NVIDIA driver.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/vae
ENV PATH=/opt/vae/bin:$PATH
# torch first, from the chosen index, so that no dependency pulls another build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vae_core vae_core
COPY model_refs model_refs
COPY pipelines pipelines
COPY serving serving
COPY vae_cli vae_cli
RUN pip install . "psycopg[binary]>=3.2"

FROM python:${PYTHON_VERSION}-slim
LABEL org.opencontainers.image.title="vae-tables" \
      org.opencontainers.image.description="Variational autoencoders for tables on Ray and MLflow"
RUN useradd --create-home --uid 1000 --shell /bin/bash vae
COPY --from=build /opt/vae /opt/vae
ENV PATH=/opt/vae/bin:$PATH PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0
USER 1000
WORKDIR /home/vae
EXPOSE 8000 8265 6379
ENTRYPOINT ["vae"]
CMD ["--help"]
