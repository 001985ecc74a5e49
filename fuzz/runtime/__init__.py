"""Stage 0, runtime: what every stage runs on. The Triton interpreter patch (GPU semantics on the CPU: bf16
atomics and dots, fp8), process containment of a case (sandbox) and phase timing (phases).

May import: nothing of fuzz/ (contract, kernels and reference only).
"""
