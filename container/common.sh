# shellcheck shell=bash
# Shared settings and helpers for the scripts in container/. Source it; do not run it.
#
# The image name lives here and only here. Override it for one call with the IMAGE
# environment variable, e.g.  IMAGE=registry.example.org/lab/drfrankenstein:2026-05 container/build.sh
# DOCKER selects the client binary (default: docker).

# These variables are used by the scripts that source this file.
# shellcheck disable=SC2034
DEFAULT_IMAGE="drfrankenstein:latest"
IMAGE="${IMAGE:-$DEFAULT_IMAGE}"
DOCKER="${DOCKER:-docker}"

# Repository root, resolved from this file's location (never from the working directory).
# shellcheck disable=SC2034
CONTAINER_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$CONTAINER_DIR/.." && pwd -P)"

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Print the arguments as one shell command line that sh, bash and Python's shlex.split
# all read back as exactly these arguments (plain words stay bare, others are single-quoted).
print_command() {
    local arg out=()
    local squote="'" escaped_squote="'\\''"
    for arg in "$@"; do
        if [[ -n "$arg" && "$arg" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
            out+=("$arg")
        else
            out+=("'${arg//"$squote"/"$escaped_squote"}'")
        fi
    done
    printf '%s\n' "${out[*]}"
}

require_docker() {
    command -v -- "$DOCKER" >/dev/null 2>&1 \
        || die "'$DOCKER' not found on PATH: install Docker Engine (with the NVIDIA Container Toolkit for GPUs), or use --dry-run to only print the command"
}
