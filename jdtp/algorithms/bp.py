"""Backprop baseline on the same network (design §4.5): ``config.algorithm = 'bp'``.

Mean cross-entropy, gradients through the whole network, the same forward
optimizer section ``optim`` as DTP. No feedback weights: the state carries none,
and no GMP angle is logged.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from jdtp import metrics as mt
from jdtp import networks as nets
from jdtp import optim, targets
from jdtp.algorithms import base, registry


@registry.register
class BP(base.Algorithm):
    name = "bp"
    sections = ("optim",)

    @classmethod
    def default_sections(cls):
        return {"optim": optim.default_config()}

    variant = "bp"  # the experiment's backprop baseline, with the values its file gives it

    def __init__(self, config, net):
        super().__init__(config, net)
        self._forward_optimizer = optim.forward_optimizer(config.optim, len(net.block_names))

    def _bind(self):
        self.fwd_tx, self.schedule = self._forward_optimizer(self.steps_per_epoch)

    def learning_rate(self, step):
        return float(self.schedule(step))

    def init_state(self, key):
        # Same draw as the DTP family (F's values do not depend on the algorithm); G is dropped.
        fwd_params, _ = nets.init_params(key, self.net, self.dtype)
        return base.TrainState(
            step=jnp.zeros((), jnp.int32),
            fwd_params=fwd_params,
            fb_params=(),
            fwd_opt_state=self.fwd_tx.init(fwd_params),
            fb_opt_state=(),
        )

    def update(self, state, x, labels, key, *, phase):
        del key, phase
        grads, (loss, logits) = targets.bp_grads(self.net, state.fwd_params, x, labels)
        updates, fwd_opt_state = self.fwd_tx.update(grads, state.fwd_opt_state, state.fwd_params)
        new_state = state.replace(
            step=state.step + 1,
            fwd_params=optax.apply_updates(state.fwd_params, updates),
            fwd_opt_state=fwd_opt_state,
        )
        return new_state, {"loss": loss, "accuracy": mt.accuracy(logits, labels)}

    @property
    def divergence_hint(self):
        return "lower the learning rate (config.optim.lr)"

    def benchmark_record(self, batch_size):
        # Forward, weight gradients, and input gradients for every block but the first.
        m = [b.linear_flops(batch_size) for b in self.net.blocks]
        return {"flops_analytic": 3 * sum(m) - m[0]}
