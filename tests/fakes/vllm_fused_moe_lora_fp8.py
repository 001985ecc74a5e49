"""A fake kernel file with vLLM 0.34's `_fused_moe_lora_fp8` signature (ours, not vLLM's code), computed in torch:
correct unless FUZZ_BUG says otherwise. It reads every quantized argument the way the signature names them
(use_* flags, per_channel_quant, block_shape, the stacked scales, shrink_act_scale for qcurr_hidden_states
already quantized, expand_act_scale static or None), so a case judged correct proves fuzz/upstream/vllm_fp8.py
drives them from the case as the contract says. Loaded with --impl vllm-fp8:tests/fakes/vllm_fused_moe_lora_fp8.py.
"""

import torch
from moe_lora_fuzz.contract.quant import dequantize, quantize_activation
from vllm.triton_utils import triton  # noqa: F401  (a framework import, stood in for)

FUZZ_CAPABILITIES = {"fp32_precision": "ieee"}
FUZZ_BUG = ""  # "act-scale-ignored": shrink_act_scale never applied (what the 0.34 kernel does)


def _groups(n, k, per_channel_quant, block_shape):
    if block_shape is not None:
        return block_shape[0], block_shape[1]
    return (1, k) if per_channel_quant else (n, k)


def _fused_moe_lora_fp8(
    output, qcurr_hidden_states, lora_a_stacked, lora_b_stacked, topk_weights, sorted_token_ids, expert_ids,
    num_tokens_post_padded, token_lora_mapping, max_lora_rank, top_k_num, lora_ids, num_active_loras,
    adapter_enabled, shrink_block_size_m, shrink_block_size_n, shrink_block_size_k, shrink_group_size_m,
    shrink_num_warps, shrink_num_stages, shrink_split_k, expand_block_size_m, expand_block_size_n,
    expand_block_size_k, expand_group_size_m, expand_num_warps, expand_num_stages, expand_split_k,
    lora_a_scale_stacked, lora_b_scale_stacked, shrink_act_scale=None, expand_act_scale=None,
    mul_routed_weight=False, fully_sharded=False, offset=0, use_fp8_w8a8=False, use_int8_w8a8=False,
    use_int8_w8a16=False, per_channel_quant=False, block_shape=None,
):  # fmt: skip
    w8a8 = use_fp8_w8a8 or use_int8_w8a8
    scheme = "fp8_w8a8" if use_fp8_w8a8 else "int8_w8a8"
    m, k = topk_weights.shape
    x = qcurr_hidden_states.double()
    if w8a8 and FUZZ_BUG != "act-scale-ignored":
        g = block_shape[1] if block_shape is not None else x.shape[1]
        x = x * shrink_act_scale.double().repeat_interleave(g, dim=1)[:, : x.shape[1]]
    rows = x if x.shape[0] == m * k else x.repeat_interleave(k, dim=0)
    lanes = token_lora_mapping.long().repeat_interleave(k)
    ids = _topk_ids(sorted_token_ids, expert_ids, num_tokens_post_padded, m * k, shrink_block_size_m)
    weights = zip(lora_a_stacked, lora_a_scale_stacked, lora_b_stacked, lora_b_scale_stacked, strict=True)
    for s, (a, sa, b, sb) in enumerate(weights):
        a64 = dequantize(a, sa, *_groups(a.shape[2], a.shape[3], per_channel_quant, block_shape))
        b64 = dequantize(b, sb, *_groups(b.shape[2], b.shape[3], per_channel_quant, block_shape))
        n = b.shape[2]
        for f in range(m * k):
            lane = int(lanes[f])
            if lane < 0 or not int(adapter_enabled[lane]) or int(ids[f]) < 0:
                continue
            e = int(ids[f])
            t = a64[lane, e] @ rows[f]
            if w8a8:
                g = block_shape[1] if block_shape is not None else t.shape[0]
                q, sc = quantize_activation(t.view(1, -1), scheme, g, expand_act_scale)
                t = q.double()[0] * sc.double().repeat_interleave(g, dim=1)[0, : t.shape[0]]
            else:
                t = t.to(output.dtype).double()
            d = b64[lane, e] @ t
            if mul_routed_weight:
                d = d * float(topk_weights.reshape(-1)[f])
            cols = slice(offset + s * n, offset + (s + 1) * n)
            output[f // k, f % k, cols] = (output[f // k, f % k, cols].double() + d).to(output.dtype)


def _topk_ids(sorted_token_ids, expert_ids, num_tokens_post_padded, num_routed, block_m):
    """Each routed pair's expert, read back from the align output (-1 where it is not listed)."""
    ids = torch.full((num_routed,), -1, dtype=torch.long)
    for lane in range(sorted_token_ids.shape[0]):
        used = int(num_tokens_post_padded[lane])
        for i in range(used):
            f = int(sorted_token_ids[lane, i])
            if f < num_routed:
                ids[f] = int(expert_ids[lane, i // block_m])
    return ids
