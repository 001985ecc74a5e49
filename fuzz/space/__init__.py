"""Stage 1, the case space: `Case` (one point of the knob space, JSON round-trip), drawing cases (generate,
strategies), what an implementation declares it accepts (capabilities) and the edges a case reaches
(coverage).

May import: runtime.
"""
