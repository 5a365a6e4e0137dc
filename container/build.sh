#!/usr/bin/env bash
# Build the project's image from container/Dockerfile and tag it as $IMAGE.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF2
Usage: container/build.sh [--dry-run] [-h] [EXTRA_DOCKER_BUILD_ARGS...]

Builds container/Dockerfile with the repository root as context (only the files that
container/Dockerfile.dockerignore lets through are sent) and tags the result $IMAGE.
Extra arguments go to 'docker build' unchanged, e.g. --no-cache or --pull.

Environment: IMAGE (tag to build, default $DEFAULT_IMAGE), BASE_IMAGE (overrides the
Dockerfile's PyTorch base image; its torch must satisfy requirements.txt), DOCKER (client).

  --dry-run    Print the docker command instead of running it.
  -h, --help   Show this help and exit.
EOF2
}

dry_run=false
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --dry-run) dry_run=true ;;
        *) extra+=("$1") ;;
    esac
    shift
done

# BuildKit (the default builder since Docker 23) is needed for Dockerfile.dockerignore.
cmd=("$DOCKER" build --file "$CONTAINER_DIR/Dockerfile" --tag "$IMAGE")
if [[ -n "${BASE_IMAGE:-}" ]]; then
    cmd+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
cmd+=(${extra[@]+"${extra[@]}"} "$REPO_ROOT")

if $dry_run; then
    print_command "${cmd[@]}"
    exit 0
fi
require_docker
DOCKER_BUILDKIT=1 "${cmd[@]}"
printf 'built %s; run it with container/docker_run.sh\n' "$IMAGE"
