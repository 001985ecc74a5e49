#!/usr/bin/env bash
# Fuzz the fused MoE LoRA kernel file of a released vLLM wheel, without installing vLLM: the file is loaded
# with vLLM's framework imports stood in for (docs/upstream.md). Needs the package index (to download the
# wheel); on a CPU machine it runs on Triton's interpreter with tiny shapes, on a GPU with the nightly profile.
#
#   bash examples/upstream_release.sh 0.34.0 [extra moe-lora-fuzz run arguments]
set -euo pipefail
version="${1:?usage: upstream_release.sh VLLM_VERSION [run arguments]}"; shift
work="upstream-vllm-$version"
mkdir -p "$work"
[ -n "$(ls "$work"/vllm-*.whl 2>/dev/null)" ] || pip download --no-deps --dest "$work" "vllm==$version"
kernel=$(unzip -Z1 "$work"/vllm-*.whl | grep -m1 '/fused_moe_lora_op\.py$')  # where it lives moves by release
unzip -o -q "$work"/vllm-*.whl "$kernel" -d "$work/src"
exec moe-lora-fuzz run --impl "vllm:$work/src/$kernel" --budget 300 --out "$work/fuzz-out" "$@"
