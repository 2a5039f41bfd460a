"""L-DRL DTP, the paper's algorithm (§4, Alg. 3; design §1-2): ``config.algorithm = 'dtp'``.

Feedback: K_n iterations of the L-DRL loss per layer (``jdtp.feedback``), each
followed by an SGD-momentum step; targets: difference target propagation
(paper Eq. 3-5). Section ``dtp``: the layer-wise keys
(``jdtp.algorithms.layerwise.section_defaults``) plus the L-DRL probe and
whether to use the closed-form gradient.
"""

from __future__ import annotations

from jdtp import config_checks as cc
from jdtp import feedback
from jdtp.algorithms import layerwise, registry


@registry.register
class DTP(layerwise.LayerwiseAlgorithm):
    name = "dtp"
    sections = ("optim", "dtp")

    @classmethod
    def default_sections(cls):
        sections = super().default_sections()
        s = sections["dtp"]
        s.probe = "difference"  # 'difference' (reference) or 'jvp' (small-noise limit)
        # L-DRL gradient of the 'difference' probe: closed form (True; 4 instead of 5
        # linear maps per iteration, half of them outside the loop, see
        # jdtp.feedback.ldrl_layer_loss) or autodiff.
        s.ldrl_closed_form = True
        return sections

    def __init__(self, config, net):
        super().__init__(config, net)
        section = config.dtp
        cc.check_one_of("config.dtp.probe", section.probe, feedback.PROBES)
        self.probe = section.probe
        self.closed_form = bool(section.ldrl_closed_form)

    def layer_loss(self, n, f_params, x, y, aux):
        return feedback.ldrl_layer_loss(
            self.net.blocks[n],
            f_params,
            x,
            y,
            aux,
            sigma=self.hp.noise_scale[n - 1],
            unpool_mode=self.hp.unpool_mode,
            probe=self.probe,
            closed_form=self.closed_form,
        )

    def make_targets(self, fb_params, labels, beta):
        return layerwise.difference_targets(self.net, fb_params, labels, beta, self.hp.unpool_mode)

    def fb_iteration_maps(self):
        """Linear maps per L-DRL iteration, as jdtp computes it.

        ``hoisted``: what does not depend on G, computed before the sequential loop
        (``feedback.LayerLoss.prepare``); ``chain``: what each sequential iteration runs.
        Closed form (``feedback.ldrl_layer_loss``): hoisted F(x+dx) and the constant weight
        gradient wg(Δ1, −2dx/B); in the chain G's map L_W(Δ2) and the weight gradient
        wg(Δ2, 2L_W(Δ2)/B): 2 + 2 (before hoisting all 4 were in the chain). Autodiff form:
        hoisted F(x+dx); in the chain G's map on both differences and their two weight gradients:
        1 + 4. Kernel gradients are counted as the direct product, whichever form computes them
        (the FFT form of 5×5 kernels needs fewer FLOPs). The ``jvp`` probe is counted as autodiff.
        """
        closed_form = self.probe == "difference" and self.closed_form
        return {"hoisted": 2, "chain": 2} if closed_form else {"hoisted": 1, "chain": 4}

    def benchmark_record(self, batch_size):
        closed_form = self.probe == "difference" and self.closed_form
        return {"probe": self.probe, "ldrl_closed_form": closed_form, **super().benchmark_record(batch_size)}
