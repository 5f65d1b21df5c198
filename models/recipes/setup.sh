#!/usr/bin/env bash
# Installs what the training recipes need: Debian's PyTorch, ONNX (import_pack.py reads packs) and OpenBLAS (without OpenBLAS, training is ~20x slower).
set -euo pipefail
if /usr/bin/python3 -c 'import torch, numpy, onnx' 2>/dev/null && dpkg -s libopenblas0-pthread >/dev/null 2>&1; then
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-torch python3-numpy python3-onnx libopenblas0-pthread
