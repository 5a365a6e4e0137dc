#!/usr/bin/env bash
# Fetch a prebuilt image of this project from a registry instead of building it.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF2
Usage: container/pull.sh [--dry-run] [-h]

Runs: docker pull \$IMAGE  (now $IMAGE).
The default name $DEFAULT_IMAGE is a local tag made by container/build.sh; to use an
image your lab pushed to a registry, name it, and use the same IMAGE when running:
  IMAGE=registry.example.org/lab/drfrankenstein:latest container/pull.sh
  IMAGE=registry.example.org/lab/drfrankenstein:latest container/docker_run.sh -g 0 -i

  --dry-run    Print the docker command instead of running it.
  -h, --help   Show this help and exit.
EOF2
}

dry_run=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --dry-run) dry_run=true; shift ;;
        *) printf 'error: unknown argument: %s\n\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
done

cmd=("$DOCKER" pull "$IMAGE")
if $dry_run; then
    print_command "${cmd[@]}"
    exit 0
fi
require_docker
if ! "${cmd[@]}"; then
    die "could not pull '$IMAGE'; set IMAGE to an image in a registry you can reach, or build it locally with container/build.sh"
fi
