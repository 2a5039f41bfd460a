"""Vanilla DTP and TP baselines (paper Alg. 1 and §3.1; design §8.2): ``'vanilla_dtp'``, ``'tp'``.

Both train each G^n to invert F^n with the reconstruction loss of Lee et al.
(2015) (:func:`jdtp.feedback.reconstruction_loss`), with the same per-layer K,
σ and SGD-momentum optimizers as L-DRL. Vanilla DTP propagates targets with the
difference correction (Eq. 4); TP uses ``t^n = G^n(t^{n+1})``. The forward
update is the same layer-local loss as DTP (Eq. 6). The reference marks these
"not tuned"; they exist for comparison (variants ``:vanilla_dtp`` and ``:tp``).
"""

from __future__ import annotations

from jdtp import feedback, targets
from jdtp.algorithms import layerwise, registry

# The forward lr of both variants: the reference's baselines are "Hparams not tuned" (design §8.2).
VARIANT_LR = 1e-3


class _Reconstruction(layerwise.LayerwiseAlgorithm):
    """Layer-wise G trained on the reconstruction loss."""

    @classmethod
    def adapt_variant(cls, config):
        # The experiment's DTP per-layer lists and β are carried over (registry.switch).
        config.optim.lr = VARIANT_LR

    def fb_iteration_maps(self):
        # Hoisted: F(x + dx); chain: G's map of the noisy output and its weight gradient.
        return {"hoisted": 1, "chain": 2}

    def layer_loss(self, n, f_params, x, y, aux):
        del y, aux
        return feedback.reconstruction_layer_loss(
            self.net.blocks[n], f_params, x, sigma=self.hp.noise_scale[n - 1], unpool_mode=self.hp.unpool_mode
        )


@registry.register
class VanillaDTP(_Reconstruction):
    name = "vanilla_dtp"
    sections = ("optim", "vanilla_dtp")
    variant = "vanilla_dtp"

    def make_targets(self, fb_params, labels, beta):
        return layerwise.difference_targets(self.net, fb_params, labels, beta, self.hp.unpool_mode)


@registry.register
class TP(_Reconstruction):
    name = "tp"
    sections = ("optim", "tp")
    variant = "tp"

    def make_targets(self, fb_params, labels, beta):
        def fn(s, aux):
            t_last = targets.output_target(s[-1], labels, beta)
            return targets.propagate_targets_tp(
                self.net, fb_params, s, aux, t_last, unpool_mode=self.hp.unpool_mode
            )

        return fn
