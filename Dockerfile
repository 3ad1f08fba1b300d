# GPU image for training, indexing and vLLM serving (CUDA 13.0 runtime, Python 3.11).
# Needs an NVIDIA driver >= 580 on the host: torch 2.14.0, fbgemm-gpu 1.9.0 and vllm 0.33.0
# are CUDA 13.0 wheels (the image's NVIDIA_REQUIRE_CUDA refuses to start on an older driver).
#   docker build -t recsys .
#   docker run --gpus all -it recsys scripts/gpu_smoke.sh          # the first-run check (docs/gpu.md)
#   docker run --gpus all -it -v $PWD/outputs:/app/outputs recsys \
#       python -m recsys.train experiment=ml100k/two_tower trainer=gpu
# Pins: requirements/gpu.txt + pyproject.toml, resolved in one pip call (tests/test_env_files.py).
FROM nvidia/cuda:13.0.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    WANDB_MODE=offline

RUN apt-get update && apt-get install -y --no-install-recommends \
        software-properties-common git build-essential curl \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Dependencies first (a layer that survives code changes): the GPU stack and the package's
# own pins (+ pytest, for the smoke check) in ONE resolve. `.` here has no sources yet, so it contributes only its
# dependencies; the editable install below adds the code without touching them.
COPY requirements/ requirements/
COPY pyproject.toml README.md ./
RUN pip install --upgrade pip==26.3 \
    && pip install -r requirements/gpu.txt ".[dev]" \
    && pip install --no-deps -r requirements/data.txt

COPY recsys/ recsys/
COPY configs/ configs/
COPY scripts/ scripts/
COPY tests/ tests/
COPY docs/ docs/
RUN pip install --no-deps -e .

CMD ["python", "-m", "recsys.train", "experiment=ml100k/two_tower", "trainer=gpu"]
