"""Implementations that record what they receive (for tests of the protocol and of the adapters)."""

CALLS: list = []


def record(
    *,
    out,
    x,
    topk_ids,
    topk_weights,
    token_lora,
    adapter_enabled,
    lora_a,
    lora_b,
    mul_routed_weight,
    offset,
    layout,
    config=None,
) -> None:
    """The adapter protocol with a `config` parameter; adds nothing (so it is correct only for empty work)."""
    CALLS.append({"config": config, "m": topk_ids.shape[0]})


def record_fused(*args, **kwargs) -> None:
    """Any fused convention: records the positional and keyword arguments."""
    CALLS.append({"args": args, "kwargs": kwargs})
