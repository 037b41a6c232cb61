# feedrec API, CPU image. Build: docker build -t feedrec-api .
# Serves the models named in FEEDREC_MODELS (bundle paths under /app/bundles or registry refs).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FEEDREC_EXTENSIONS_DIR=/app/.cache/torch_extensions
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# Dependencies first (cached layer); the CPU torch wheel comes from PyTorch's CPU index.
COPY pyproject.toml constraints.txt README.md ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt \
        "torch==2.13.0" \
    && pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt \
        fastapi "uvicorn[standard]" redis onnx onnxruntime onnxscript orjson pydantic pydantic-settings \
        safetensors pyyaml prometheus-client httpx pyarrow pandas scipy numpy implicit torch-geometric \
        mlflow threadpoolctl ninja

COPY feedrec_common ./feedrec_common
COPY recsys ./recsys
COPY serving ./serving
COPY cpp ./cpp
COPY abtest ./abtest
COPY configs ./configs
RUN pip install --no-deps -e . \
    && python -m recsys.topk build || echo "top-k C++ extension not built; the torch fallback is used"

RUN useradd --create-home feedrec && mkdir -p /app/bundles && chown -R feedrec /app
USER feedrec
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["python", "-m", "serving", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
