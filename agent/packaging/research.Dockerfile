# syntax=docker/dockerfile:1
# Research container: what a researcher works in on a cloud VM (a fleet's "image" on terraform
# fleets). The bootstrap (terraform/user-data.sh.tftpl) runs it with the GPU as
#   docker run -d --name lablink-research --gpus all -v lablink-workspace:/workspace <image> sleep infinity
# copies the tutorial repository into /workspace, then runs the fleet's startup script in it with
# `docker exec lablink-research bash /etc/lablink/startup.sh`. The agent throws it away with its
# volume on every release. No desktop: researchers reach it through the VM.
# Build from the repository root (scripts/build-images.sh does this and tags the version):
#   docker build -f agent/packaging/research.Dockerfile -t <registry>/lablink-research:<version> agent/packaging
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PIP_NO_CACHE_DIR=1
# bash for the startup script; git, Python and a compiler for what tutorials install.
RUN apt-get update \
  && apt-get install -y --no-install-recommends \
    bash ca-certificates curl git build-essential python3 python3-pip python3-venv \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /workspace
VOLUME /workspace
STOPSIGNAL SIGTERM
CMD ["sleep", "infinity"]
