"""The block protocol of conv and dense blocks: adjoint feedback, G's input transform, closed-form parts."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdtp import blocks as blk
from jdtp import conv as convs
from jdtp import networks as nets
from jdtp import pooling


@pytest.mark.parametrize("block_index", [1, 2, 3])
def test_feedback_linear_part_is_adjoint_when_weights_equal(block_index):
    """⟨G_lin(y), x⟩ = ⟨y, F_lin(x)⟩ with G = sym(F), no activation, pool or bias."""
    net = nets.lenet(
        (16, 16, 3), 10, channels=(4, 6), hidden=8, activation="identity", pool=False, use_bias=False
    )
    fwd, _ = nets.init_params(jax.random.key(0), net)
    fb = nets.symmetric_fb_params(net, fwd)
    block = net.blocks[block_index]
    x = jax.random.normal(jax.random.key(1), (3, *block.in_shape))
    fx, _ = block.forward(fwd[block_index], x)
    y = jax.random.normal(jax.random.key(2), fx.shape)
    gy = block.feedback(fb[block_index], y, None)
    np.testing.assert_allclose(jnp.vdot(gy, x), jnp.vdot(y, fx), rtol=1e-5)


def test_vgg_conv_feedback_is_adjoint_when_weights_equal():
    net = nets.simple_vgg((32, 32, 3), 10, channels=(4, 4, 8, 8, 8), activation="identity", use_bias=False)
    fwd, _ = nets.init_params(jax.random.key(0), net)
    fb = nets.symmetric_fb_params(net, fwd)
    block = net.blocks[1]
    x = jax.random.normal(jax.random.key(1), (3, *block.in_shape))
    h = convs.conv(x, fwd[1]["kernel"], 1, 1)
    y = jax.random.normal(jax.random.key(2), h.shape)
    g = convs.conv_transpose(y, fb[1]["kernel"], 1, 1, block.in_shape[:2])
    np.testing.assert_allclose(jnp.vdot(g, x), jnp.vdot(y, h), rtol=1e-5)


def test_feedback_applies_activation_to_its_input():
    """G = convᵀ ∘ ELU ∘ unpool (design §3.1): check one conv block against a manual composition."""
    net = nets.lenet((8, 8, 2), 3, channels=(3, 4), hidden=5)
    fwd, fb = nets.init_params(jax.random.key(0), net)
    block = net.blocks[1]
    x = jax.random.normal(jax.random.key(1), (2, *block.in_shape))
    y, idx = block.forward(fwd[1], x)
    t = y + 0.3 * jax.random.normal(jax.random.key(2), y.shape)
    got = block.feedback(fb[1], t, idx, unpool_mode="add")
    manual = (
        convs.conv_transpose(
            jax.nn.elu(pooling.max_unpool(t, idx, block.pool, block.conv_shape[:2], "add")),
            fb[1]["kernel"],
            1,
            2,
            block.in_shape[:2],
        )
        + fb[1]["bias"]
    )
    chex.assert_trees_all_close(got, manual, atol=1e-6)


@pytest.mark.parametrize("block_index", [1, 2, 3])
def test_feedback_linear_kernel_grad_equals_autodiff(block_index):
    net = nets.lenet((16, 16, 3), 10, channels=(4, 6), hidden=8)
    block = net.blocks[block_index]
    _, g = nets.init_block(jax.random.key(0), block)
    ka, kc = jax.random.split(jax.random.key(1))
    a = jax.random.normal(
        ka, (3, *(block.conv_shape if isinstance(block, blk.ConvBlock) else (block.features,)))
    )
    ct = jax.random.normal(kc, (3, *block.in_shape))
    ref = jax.grad(lambda gk: jnp.vdot(ct, block.feedback_linear({**g, "kernel": gk}, a)))(g["kernel"])
    chex.assert_trees_all_close(block.feedback_weight_grads(a, ct)["kernel"], ref, atol=1e-4, rtol=1e-4)
