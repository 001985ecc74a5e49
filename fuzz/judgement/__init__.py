"""Stage 4, judgement: the oracle (run an implementation on a case, compare with the fp64 reference under a
per-element bound, the metamorphic twin, the verdict and its signature), the quantized bound (bound_quant)
and the self-check of our own kernels on this machine (selfcheck).

May import: runtime, space, data, targets.
"""
