#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for benchmarks/gpu_run.sh, the one prepared GPU check of issue 8.
# Run here, where pip reaches a registry: the lent GPU machine has torch, numpy, yaml, transformers and
# huggingface_hub but not transformer-lens and a few of its needs, and `../shared` does not travel to it.
#   bash tools/gpu_prepare.sh        # then, with the device tool:
#   run(command="bash benchmarks/gpu_run.sh", carry=[".gpu"], timeout_s=590)
# .gpu/ holds wheels for Python 3.12 (the device's) and the seed-0 checkpoint and build config for the duration
# of the call; it is never committed (.gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${LIB_NB_SHARED:-../shared}
M=data/modadd_paper
rm -rf .gpu && mkdir -p .gpu/whl ".gpu/shared/$M/reference_seed0" ".gpu/shared/$M/seed0"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  transformer-lens==3.9.0 better-abc fancy-einsum datasets==5.2.0 dill multiprocess beartype typeguard
cp "$S/$M/reference_seed0/lib_build_config.yaml" ".gpu/shared/$M/reference_seed0/"
cp "$S/$M/seed0/"* ".gpu/shared/$M/seed0/"
ls .gpu/whl; du -sh .gpu
