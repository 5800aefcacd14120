#!/usr/bin/env bash
# Smoke test of the Dockerfile on a machine without a Docker engine or an image registry.
#
#   sudo scripts/docker_smoke.sh        (needs root: rootful podman/buildah, debootstrap)
#
# What it does:
#   1. installs debootstrap, buildah, podman and runc with apt-get if they are missing;
#   2. makes a local base image once (cached in podman's store, reused afterwards):
#        localhost/dqn-base:bookworm        Debian bookworm (minbase) + python3, made with
#                                           debootstrap and `podman import`;
#        localhost/dqn-base-torch:<version> that + a CPU torch wheel in the system Python.
#      The second one stands in for the default PyTorch CUDA base: torch comes with the
#      base, exactly as in a real `docker build`, so the Dockerfile is used unchanged
#      apart from --build-arg BASE_IMAGE;
#   3. builds the Dockerfile with `buildah bud --isolation chroot`;
#   4. runs a tiny dqn-train and a dqn-eval in the image with podman, a host directory
#      mounted on /runs, and checks: non-root user, the run's checkpoint written to the
#      host directory (as <game>/<time>/checkpoints/latest.pt), dqn-eval's last line is
#      JSON with "return_mean".
#
# Environment:
#   TORCH_WHEEL  CPU torch wheel for the stand-in base (default: newest cp311 CPU wheel
#                in /opt/wheels). Its Python tag must match bookworm's Python (3.11).
#   IMAGE        tag of the image built (default localhost/dqn-atari:smoke)
#   KEEP_RUNS=1  keep the host directory mounted on /runs (printed at the end)
#
# To rebuild the cached base images: podman rmi localhost/dqn-base-torch:<version>
# localhost/dqn-base:bookworm
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="localhost/dqn-base:bookworm"
IMAGE="${IMAGE:-localhost/dqn-atari:smoke}"
SUITE="bookworm"

# podman runs with runc and cgroupfs: that is what works in sandboxes without systemd.
# The ulimits keep the container's limits within what such a sandbox allows.
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
RUN_OPTS=(--rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

START=$SECONDS
step() { printf '\n==> [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '\ndocker smoke: FAILED: %s\n' "$*" >&2; exit 1; }

CLEANUP=()
cleanup() {
    local path
    for path in "${CLEANUP[@]}"; do
        rm -rf -- "$path"
    done
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || die "run as root (rootful podman and debootstrap need it)"

# --- 1. tools ------------------------------------------------------------------------------
missing=()
for tool in debootstrap buildah podman runc; do
    command -v "$tool" > /dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap buildah podman runc
fi

if command -v hadolint > /dev/null; then
    step "hadolint Dockerfile"
    hadolint "$REPO/Dockerfile"
fi

# --- 2. local base images --------------------------------------------------------------------
if [[ -z ${TORCH_WHEEL:-} ]]; then
    TORCH_WHEEL="$(find /opt/wheels -maxdepth 1 -name 'torch-*+cpu-cp311-*.whl' 2> /dev/null |
        sort -V | tail -n 1)"
fi
[[ -n $TORCH_WHEEL && -f $TORCH_WHEEL ]] ||
    die "no CPU torch wheel found: set TORCH_WHEEL=/path/to/torch-...+cpu-cp311-...whl"
TORCH_VERSION="$(basename "$TORCH_WHEEL" | cut -d- -f2 | tr '+' '-')"
TORCH_BASE="localhost/dqn-base-torch:${TORCH_VERSION}"

if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
    step "base image $BASE_IMAGE exists (cached)"
else
    step "making $BASE_IMAGE with debootstrap (about a minute)"
    rootfs="$(mktemp -d /tmp/dqn-rootfs.XXXXXX)"
    CLEANUP+=("$rootfs")
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        "$SUITE" "$rootfs"
    # Trust the same extra CA certificates as this host (a TLS-intercepting proxy in front
    # of the package index, for example), so pip inside the builds can reach the index.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates > /dev/null 2>&1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${PODMAN[@]}" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" > /dev/null
fi

if "${PODMAN[@]}" image exists "$TORCH_BASE"; then
    step "base image $TORCH_BASE exists (cached)"
else
    step "making $TORCH_BASE from $(basename "$TORCH_WHEEL")"
    ctx="$(mktemp -d /tmp/dqn-torch-base.XXXXXX)"
    CLEANUP+=("$ctx")
    wheel="$(basename "$TORCH_WHEEL")"
    ln "$TORCH_WHEEL" "$ctx/$wheel" 2> /dev/null || cp "$TORCH_WHEEL" "$ctx/$wheel"
    cat > "$ctx/Containerfile" << EOF
FROM $BASE_IMAGE
COPY $wheel /tmp/$wheel
RUN pip3 install --no-cache-dir --break-system-packages /tmp/$wheel && rm /tmp/$wheel && \
    python3 -c 'import torch; print("torch", torch.__version__)'
EOF
    buildah bud --isolation chroot --quiet -t "$TORCH_BASE" "$ctx" > /dev/null
fi

# --- 3. build --------------------------------------------------------------------------------
[[ -f $REPO/pyproject.toml ]] || die "no pyproject.toml in $REPO"
step "building $IMAGE from $REPO/Dockerfile on $TORCH_BASE"
# Replace the image of an earlier run rather than leave it behind untagged.
if "${PODMAN[@]}" image exists "$IMAGE"; then
    "${PODMAN[@]}" rmi -f "$IMAGE" > /dev/null
fi
buildah bud --isolation chroot \
    --build-arg BASE_IMAGE="$TORCH_BASE" \
    -f "$REPO/Dockerfile" -t "$IMAGE" "$REPO" || die "image build failed"

# The base's torch must have been reused, not replaced by one pip downloaded.
in_venv="$("${PODMAN[@]}" run "${RUN_OPTS[@]}" "$IMAGE" \
    sh -c 'ls -d /opt/venv/lib/python3*/site-packages/torch 2>/dev/null || true')"
[[ -z $in_venv ]] || die "pip installed a second torch into the image's venv ($in_venv)"

# --- 4. run ----------------------------------------------------------------------------------
step "checking the container user"
uid="$("${PODMAN[@]}" run "${RUN_OPTS[@]}" "$IMAGE" id -u)"
user="$("${PODMAN[@]}" run "${RUN_OPTS[@]}" "$IMAGE" id -un)"
[[ $uid != 0 ]] || die "container runs as root"
echo "runs as $user (uid $uid)"

step "default command (dqn-train --help)"
"${PODMAN[@]}" run "${RUN_OPTS[@]}" "$IMAGE" > /dev/null || die "default command failed"

runs="$(mktemp -d /tmp/dqn-smoke-runs.XXXXXX)"
[[ ${KEEP_RUNS:-0} == 1 ]] || CLEANUP+=("$runs")
# The image's user must be able to write to the mounted directory.
chown "$uid" "$runs"

step "dqn-train (tiny Pong run) with $runs mounted on /runs"
# Default run directory (runs/<game>/<time> under the working directory): checks that a
# run lands directly in the mounted directory.
"${PODMAN[@]}" run "${RUN_OPTS[@]}" -v "$runs:/runs" "$IMAGE" \
    dqn-train env=Pong total_steps=2000 learning_starts=500 buffer_size=5000 device=cpu ||
    die "dqn-train failed in the container"
ckpt="$(find "$runs" -path '*/checkpoints/latest.pt' -size +0 | head -n 1)"
[[ -n $ckpt ]] || die "no checkpoints/latest.pt in $runs on the host"
rel="${ckpt#"$runs"/}"
[[ $rel == Pong/*/checkpoints/latest.pt ]] || die "unexpected run layout on the host: $rel"
echo "checkpoint on the host: $ckpt ($(stat -c '%s bytes, owner uid %u' "$ckpt"))"

step "dqn-eval on that checkpoint"
eval_out="$runs/eval.out"
if ! "${PODMAN[@]}" run "${RUN_OPTS[@]}" -v "$runs:/runs" "$IMAGE" \
    dqn-eval checkpoint="/runs/$rel" episodes=1 device=cpu |
    tee "$eval_out"; then
    die "dqn-eval failed in the container"
fi
last="$(grep -v '^[[:space:]]*$' "$eval_out" | tail -n 1)"
python3 - "$last" << 'EOF' || die "dqn-eval's last line is not JSON with return_mean: $last"
import json
import sys

result = json.loads(sys.argv[1])
assert isinstance(result, dict) and "return_mean" in result, result
print("dqn-eval return_mean:", result["return_mean"])
EOF

if [[ ${KEEP_RUNS:-0} == 1 ]]; then
    echo "runs kept in $runs"
fi
step "done in $((SECONDS - START))s"
echo "docker smoke: OK"
