"""The jitted DTP and BP train steps (spec §1.1, §2)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdtp import feedback, optim, steps
from jdtp import networks as nets


def _setup(net, hp):
    fwd_tx = optim.make_fwd_optimizer(optim.make_schedule(0.05, 10))
    fb_txs = feedback.make_fb_optimizers(hp.fb_lr)
    return fwd_tx, fb_txs


NETS = {
    "lenet": lambda: nets.lenet((32, 32, 3), 10, channels=(4, 8), hidden=16),
    "simple_vgg": lambda: nets.simple_vgg((32, 32, 3), 10, channels=(4, 4, 8, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_dtp_and_bp_steps_keep_shapes_stay_finite_and_never_retrace(name):
    net = NETS[name]()
    n = net.num_trainable_fb
    hp = steps.DTPHParams(beta=0.5, noise_scale=(0.1,) * n, num_fb_iters=(2,) * n, fb_lr=(0.01,) * n)
    fwd_tx, fb_txs = _setup(net, hp)
    batch = {"image": jax.random.normal(jax.random.key(1), (4, 32, 32, 3)), "label": jnp.array([0, 1, 2, 3])}
    for make, txs in ((steps.make_dtp_train_step, fb_txs), (steps.make_bp_train_step, ())):
        state0 = steps.create_train_state(jax.random.key(0), net, fwd_tx, txs)
        shapes = jax.tree.map(lambda a: a.shape, state0)
        traced = []

        def preprocess(b, k):
            traced.append(1)  # runs once per trace
            return b["image"], b["label"]

        step = make(net, fwd_tx, fb_txs, hp, preprocess) if txs else make(net, fwd_tx, preprocess)
        state, first = state0, None
        for i in range(3):
            state, metrics = step(state, batch, jax.random.key(i))
            first = first or jax.tree.map(np.asarray, state.fwd_params)
        assert len(traced) == 1, "train step retraced"
        chex.assert_trees_all_equal(jax.tree.map(lambda a: a.shape, state), shapes)
        chex.assert_tree_all_finite((state.fwd_params, state.fb_params, metrics))
        assert int(state.step) == 3
        assert not np.allclose(first[0]["kernel"], state.fwd_params[0]["kernel"])
        if txs:
            assert metrics["fb_loss_first"].shape == (n,)
            assert metrics["fb_loss_last"].shape == (n,)
            assert metrics["jmc_angle"].shape == (n,)


def test_chex_max_traces_on_dtp_step():
    net = NETS["lenet"]()
    hp = steps.DTPHParams(beta=0.5, noise_scale=(0.1,) * 3, num_fb_iters=(1, 2, 3), fb_lr=(0.01,) * 3)
    fwd_tx, fb_txs = _setup(net, hp)
    state = steps.create_train_state(jax.random.key(0), net, fwd_tx, fb_txs)
    batch = {"image": jnp.ones((2, 32, 32, 3)), "label": jnp.array([0, 1])}
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)
    def update(state, batch, key):
        return steps.dtp_update(state, batch["image"], batch["label"], key, net, fwd_tx, fb_txs, hp)

    step = jax.jit(update)
    for i in range(3):
        state, _ = step(state, batch, jax.random.key(i))
    assert int(state.step) == 3


def test_dtp_step_trains_feedback_before_forward_and_same_key_reproduces():
    net = NETS["lenet"]()
    hp = steps.DTPHParams(beta=0.5, noise_scale=(0.1,) * 3, num_fb_iters=(2, 2, 2), fb_lr=(0.01,) * 3)
    fwd_tx, fb_txs = _setup(net, hp)
    batch = {"image": jax.random.normal(jax.random.key(1), (4, 32, 32, 3)), "label": jnp.array([0, 1, 2, 3])}
    step = steps.make_dtp_train_step(net, fwd_tx, fb_txs, hp, donate=False)
    s0 = steps.create_train_state(jax.random.key(0), net, fwd_tx, fb_txs)
    a, _ = step(s0, batch, jax.random.key(5))
    b, _ = step(s0, batch, jax.random.key(5))
    c, _ = step(s0, batch, jax.random.key(6))
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a.fb_params[1]["kernel"], c.fb_params[1]["kernel"])
    chex.assert_trees_all_equal(a.fb_params[0], s0.fb_params[0])  # G^0 untouched


def test_hparam_lengths_are_validated():
    net = NETS["lenet"]()
    hp = steps.DTPHParams(beta=0.5, noise_scale=(0.1, 0.1), num_fb_iters=(2, 2, 2), fb_lr=(0.01,) * 3)
    with pytest.raises(ValueError, match=r"dtp.noise_scale has 2 entries .* expected 3"):
        hp.validate(net)
