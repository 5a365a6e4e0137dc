#!/usr/bin/env bash
# Install the Debian packages the demo and tests need, where they are missing:
#   dataset-fashion-mnist  Fashion-MNIST IDX files under /usr/share/datasets/fashion-mnist/
#   the shell linter package (shellcheck), used by the tests on container/*.sh
set -euo pipefail

missing=()
[[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] || missing+=(dataset-fashion-mnist)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "warning: not a Debian system; install ${missing[*]} yourself (or set FASHION_MNIST_DIR / DATASET_ROOT in config/default.env)" >&2
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "error: need root to install ${missing[*]}: run 'apt-get install ${missing[*]}' as root" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
