"""Stage 2, data: a case's tensors, built from its seed by a counter-based generator that gives the same bits
on the CPU and the GPU (tensors, tensors_quant, counter_rng).

May import: runtime, space.
"""
