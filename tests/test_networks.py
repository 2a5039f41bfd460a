"""Networks: shapes, parameter counts, initialisation, the architecture registry (design §3)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdtp import architectures, pooling
from jdtp import networks as nets


def test_lenet_shapes_and_parameter_counts():
    net = nets.lenet()
    assert [b.out_shape for b in net.blocks] == [(16, 16, 32), (8, 8, 64), (512,), (10,)]
    assert net.blocks[2].in_features == 4096
    assert nets.lenet((28, 28, 1)).blocks[2].in_features == 3136
    fwd, fb = nets.init_params(jax.random.key(0), net)
    size = lambda t: sum(a.size for a in jax.tree.leaves(t))  # noqa: E731
    # Spec §3.6.
    assert size(fwd) == 2_156_490
    assert [size(g) for g in fb] == [2_403, 51_232, 2_101_248, 5_632]


def test_vgg_shapes_and_roundtrip():
    net = nets.simple_vgg((32, 32, 3), 1000)
    assert [b.out_shape for b in net.blocks] == [
        (16, 16, 128),
        (8, 8, 128),
        (4, 4, 256),
        (2, 2, 256),
        (1, 1, 512),
        (1000,),
    ]
    fwd, fb = nets.init_params(jax.random.key(0), nets.simple_vgg((32, 32, 3), 10, channels=(4, 4, 4, 4, 4)))
    small = nets.simple_vgg((32, 32, 3), 10, channels=(4, 4, 4, 4, 4))
    x = jnp.ones((2, 32, 32, 3))
    for n, block in enumerate(small.blocks):
        y, idx = block.forward(fwd[n], x)
        chex.assert_shape(block.feedback(fb[n], y, idx), x.shape)
        x = y


def test_init_is_uniform_with_reference_fan_in():
    net = nets.lenet()
    fwd, fb = nets.init_params(jax.random.key(0), net)
    expect = {  # (F fan-in, G fan-in) per block, design §3.5
        0: (3 * 25, 3 * 25),
        1: (32 * 25, 32 * 25),
        2: (4096, 512),
        3: (512, 10),
    }
    for n, (ff, gf) in expect.items():
        for params, fan_in in ((fwd[n], ff), (fb[n], gf)):
            bound = 1 / math.sqrt(fan_in)
            for leaf in jax.tree.leaves(params):
                assert float(jnp.max(jnp.abs(leaf))) <= bound
                if leaf.size > 200:  # fills the interval: not He (√6 larger) nor a smaller bound
                    assert float(jnp.max(jnp.abs(leaf))) > 0.95 * bound
    # G's conv kernel is stored in F's layout.
    chex.assert_equal_shape([fwd[1]["kernel"], fb[1]["kernel"]])
    chex.assert_shape(fb[2]["kernel"], (512, 4096))


def test_init_is_reproducible_and_seed_dependent():
    net = nets.lenet((28, 28, 1))
    a = nets.init_params(jax.random.key(3), net)
    b = nets.init_params(jax.random.key(3), net)
    c = nets.init_params(jax.random.key(4), net)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a[0][0]["kernel"], c[0][0]["kernel"])


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="model.name"):
        architectures.build("resnet99", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="unpool mode"):
        pooling.max_unpool(
            jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1), jnp.int32), pooling.Pool(2, 2), (4, 4), "max"
        )
