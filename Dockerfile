# dqn-atari: train and evaluate DQN agents on Atari in a container.
#
#   docker build -t dqn-atari .
#   docker run --gpus all -v "$PWD/runs:/runs" dqn-atari dqn-train env=Breakout
#   docker run --gpus all -v "$PWD/runs:/runs" dqn-atari \
#       dqn-eval checkpoint=/runs/Breakout/<date>_<time>/checkpoints/latest.pt
#
# Build arguments
#   BASE_IMAGE  Image to build on. The default is an official PyTorch CUDA *runtime*
#               image, so a CUDA-enabled torch comes with the base and is reused as is:
#               the project's requirement (torch>=2.4) is already satisfied, so pip does
#               not download another multi-GB torch. Any base image with Python >= 3.10
#               (as `python3` or `python`, with the venv module) works.
#   TORCH_SPEC  Optional pip argument(s) installed before the package, for bases
#               without torch or to pick a specific torch build, e.g.
#               --build-arg TORCH_SPEC="torch==2.5.1". The build context is at /src, so
#               a wheel put in the context is TORCH_SPEC=/src/<path>.whl. Empty by
#               default: use the base's torch.
#   APP_UID / APP_GID  uid/gid of the non-root user `dqn` that runs everything (1000).
#
# Two stages so that nothing used only for building (the source tree, a torch wheel
# passed in through the build context, pip's build dependencies) ends up in the image.
# Both stages start from the same base, so the virtualenv built in the first one works
# unchanged in the second.

ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

ARG TORCH_SPEC=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A virtualenv keeps the install independent of how the base packages its Python
# (conda in the PyTorch images; Debian's "externally managed" Python elsewhere).
# --system-site-packages lets it see, and reuse, the torch that the base ships.
RUN PY="$(command -v python3 || command -v python)" && \
    "$PY" -m venv --system-site-packages /opt/venv

ENV PATH=/opt/venv/bin:$PATH

COPY . /src

# TORCH_SPEC is deliberately unquoted: it may hold several pip arguments.
# hadolint ignore=DL3013
RUN if [ -n "${TORCH_SPEC}" ]; then pip install --no-cache-dir ${TORCH_SPEC}; fi && \
    pip install --no-cache-dir /src && \
    dqn-train --help > /dev/null

# ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}

ARG APP_UID=1000
ARG APP_GID=1000

LABEL org.opencontainers.image.title="dqn-atari" \
      org.opencontainers.image.description="Deep Q-Networks on Atari (dqn-train, dqn-eval)" \
      org.opencontainers.image.licenses="MIT"

# Non-root user. --non-unique: some bases already have a user with uid 1000.
# Runs go to /runs (mount a host directory there). dqn-train writes to runs/<game>/<time>
# relative to the working directory, so the working directory /workspace holds a symlink
# runs -> /runs: a run lands in the mount as <game>/<time>/, the same layout as ./runs/
# outside the container, and relative paths (checkpoint=runs/...) work as they do there.
RUN groupadd --non-unique --gid "${APP_GID}" dqn && \
    useradd --non-unique --uid "${APP_UID}" --gid "${APP_GID}" --create-home \
        --shell /bin/bash dqn && \
    mkdir -p /runs /workspace && \
    ln -s /runs /workspace/runs && \
    chown "${APP_UID}:${APP_GID}" /runs /workspace

COPY --from=build /opt/venv /opt/venv

# PYTHONUNBUFFERED: training logs show up in `docker logs` as they are written.
# XDG_CACHE_HOME under /tmp: libraries that cache something still work when the
# container is started with an arbitrary `--user`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache

USER ${APP_UID}:${APP_GID}

WORKDIR /workspace
# Checkpoints, TensorBoard logs and Hydra's config of every run: mount a host directory.
VOLUME ["/runs"]

# No ENTRYPOINT: the command is the program to run, e.g. `dqn-train env=Breakout` or
# `dqn-eval checkpoint=...`.
CMD ["dqn-train", "--help"]
