#!/usr/bin/env bash
# Run a command of this project inside its Docker image, as you, on the GPUs you name.
# See usage() below or run:  container/docker_run.sh -h
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

CACHE_DIR="${CACHE_DIR:-$HOME/cache}"
SHM_SIZE="${SHM_SIZE:-8g}"
CONTAINER_CONFIG="/workspace/config/container.env"

usage() {
    cat <<EOF
Usage: container/docker_run.sh [-g GPU_IDS] [-c "COMMAND"] [-i] [-p PORT] [--dry-run] [-h]

Runs COMMAND with bash inside the image $IMAGE, as your own uid:gid, with
  the repository ($REPO_ROOT) mounted at /workspace (the working directory) and
  \$CACHE_DIR (now $CACHE_DIR; created if missing) mounted at /cache.
Inside, DRFRANK_CONFIG=$CONTAINER_CONFIG, so datasets are read from /cache/data.

Options:
  -g GPU_IDS   GPUs to use, as the host numbers them (nvidia-smi): 0 or 0,1,3, or 'all'.
               The container gets --gpus all and CUDA_VISIBLE_DEVICES=GPU_IDS with
               CUDA_DEVICE_ORDER=PCI_BUS_ID, so CUDA sees exactly these cards.
               Without -g the container gets no GPU at all (CPU only).
  -c COMMAND   Command line to run, given as ONE argument; it reaches the container
               unchanged and runs as: bash -c "COMMAND".
  -i           Interactive: allocate a terminal (-it). Without -c this opens a bash shell.
  -p PORT      Publish the container's TCP port PORT on the host's 127.0.0.1:PORT only
               (e.g. for Jupyter; from another machine use ssh -L PORT:localhost:PORT).
  --dry-run    Print the docker command instead of running it (needs no docker).
  -h, --help   Show this help and exit.

Environment: IMAGE (image to run), CACHE_DIR (host cache folder, default \$HOME/cache),
SHM_SIZE (shared memory for DataLoader workers, default 8g), DOCKER (client, default docker).

Examples:
  container/docker_run.sh -g 0 -c "python train_model.py -d cifar10"
  container/docker_run.sh -g 0,1 -c "python stitch_nets.py --help"
  container/docker_run.sh -c "python -m pytest -q"
  container/docker_run.sh -g 2 -i
  container/docker_run.sh -p 8888 -c "jupyter lab --ip 0.0.0.0 --port 8888 --no-browser"
EOF
}

usage_error() {
    printf 'error: %s\n\n' "$1" >&2
    usage >&2
    exit 2
}

gpus=""
command_line=""
have_command=false
interactive=false
port=""
dry_run=false

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        -g)
            [[ $# -ge 2 ]] || usage_error "-g needs a value, e.g. -g 0 or -g 0,1"
            gpus="$2"
            shift 2
            ;;
        -c)
            [[ $# -ge 2 ]] || usage_error "-c needs a command, e.g. -c \"python train_model.py -h\""
            command_line="$2"
            have_command=true
            shift 2
            ;;
        -i)
            interactive=true
            shift
            ;;
        -p)
            [[ $# -ge 2 ]] || usage_error "-p needs a port number, e.g. -p 8888"
            port="$2"
            shift 2
            ;;
        --dry-run)
            dry_run=true
            shift
            ;;
        *)
            usage_error "unknown argument: $1"
            ;;
    esac
done

if [[ -n "$gpus" && "$gpus" != "all" && ! "$gpus" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    usage_error "-g takes GPU numbers separated by commas (e.g. 0 or 0,1) or 'all', not '$gpus'"
fi
if [[ -n "$port" ]] && { [[ ! "$port" =~ ^[1-9][0-9]{0,4}$ ]] || ((port > 65535)); }; then
    usage_error "-p takes a TCP port number from 1 to 65535, not '$port'"
fi
if $have_command && [[ -z "$command_line" ]]; then
    usage_error "-c was given an empty command"
fi
if ! $have_command && ! $interactive; then
    usage_error "nothing to run: give -c \"COMMAND\", or -i for an interactive shell"
fi
for path in "$REPO_ROOT" "$CACHE_DIR"; do
    [[ "$path" != *,* ]] || die "cannot bind-mount '$path': docker --mount does not accept commas in paths"
done

mkdir -p -- "$CACHE_DIR"
CACHE_DIR="$(cd -- "$CACHE_DIR" && pwd -P)"
uid="$(id -u)"
gid="$(id -g)"

cmd=("$DOCKER" run --rm --init)
if $interactive; then
    cmd+=(-it)
fi
cmd+=(
    --user "$uid:$gid"
    --security-opt no-new-privileges
    --shm-size "$SHM_SIZE"
    --mount "type=bind,source=$REPO_ROOT,target=/workspace"
    --mount "type=bind,source=$CACHE_DIR,target=/cache"
    --workdir /workspace
    -e HOME=/tmp
    -e "DRFRANK_CONFIG=$CONTAINER_CONFIG"
    -e TORCH_HOME=/cache/torch
)
if [[ -n "$port" ]]; then
    cmd+=(--publish "127.0.0.1:$port:$port")
fi
if [[ -n "$gpus" ]]; then
    cmd+=(--gpus all -e CUDA_DEVICE_ORDER=PCI_BUS_ID)
    if [[ "$gpus" != "all" ]]; then
        cmd+=(-e "CUDA_VISIBLE_DEVICES=$gpus")
    fi
fi
cmd+=("$IMAGE")
if $have_command; then
    cmd+=(bash -c "$command_line")
fi
# With -i and no -c nothing follows the image: the entry script then starts bash.

if $dry_run; then
    print_command "${cmd[@]}"
    exit 0
fi

require_docker
if ! inspect_error="$("$DOCKER" image inspect --format '{{.Id}}' "$IMAGE" 2>&1 >/dev/null)"; then
    if [[ "$inspect_error" == *"No such image"* || "$inspect_error" == *"no such image"* ]]; then
        die "image '$IMAGE' is not available locally: build it with container/build.sh or fetch it with container/pull.sh"
    fi
    die "could not query docker about image '$IMAGE': ${inspect_error//$'\n'/ }"
fi

exec "${cmd[@]}"
