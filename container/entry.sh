#!/usr/bin/env bash
# Entry point of the image: run the given command, or an interactive bash without one.
set -euo pipefail

# docker_run.sh runs the container as the caller's uid, which has no home in the image:
# fall back to /tmp so tools that write to $HOME (pip, matplotlib, git) still work.
if [[ -z "${HOME:-}" || ! -w "${HOME}" ]]; then
    export HOME=/tmp
fi
if [[ -n "${MPLCONFIGDIR:-}" ]]; then
    mkdir -p -- "$MPLCONFIGDIR" 2>/dev/null || export MPLCONFIGDIR="$HOME/.config/matplotlib"
fi

if [[ $# -eq 0 ]]; then
    exec bash
fi
exec "$@"
