"""jdtp: Difference Target Propagation with backprop targets (L-DRL) in JAX.

Ernoult et al., "Towards Scaling Difference Target Propagation by Learning
Backprop Targets", ICML 2022.
"""

__version__ = "0.1.0"
