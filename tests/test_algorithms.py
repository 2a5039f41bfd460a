"""The algorithm interface, for every registered algorithm: steps, state, learning, logging, the run loop."""

import ast
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import build_algorithm, tiny_config

from jdtp import algorithms, architectures, config_base, train

ALL = algorithms.names()

# Hyperparameters under which each algorithm fits the tiny separable synthetic task (4 classes,
# class prototype + noise) within 60 steps; the run loop is the real one.
LEARNS = {
    "dtp": {"optim.lr": 0.05},
    "vanilla_dtp": {"optim.lr": 0.05, "vanilla_dtp.fb_lr": (1e-3, 1e-3, 1e-3)},
    "bp": {"optim.lr": 0.05},
    "ddtp": {"ddtp.target_stepsize": 0.5, "ddtp.lr": (3e-3,) * 4},
    "parallel_dtp": {"parallel_dtp.fwd_lr": 3e-3, "parallel_dtp.fb_lr": 1e-3},
}


def test_registry_has_the_built_in_algorithms():
    assert set(ALL) >= {"dtp", "vanilla_dtp", "tp", "ddtp", "bp", "parallel_dtp"}
    with pytest.raises(config_base.ConfigError, match=r"config.algorithm='nope', expected one of"):
        algorithms.get("nope")


@pytest.mark.parametrize("name", ALL)
def test_steps_keep_shapes_stay_finite_and_never_retrace(name):
    algo = build_algorithm(tiny_config(name))
    state0 = algo.init_state(jax.random.key(0))
    shapes = jax.tree.map(lambda a: a.shape, state0)
    batch = {"image": jax.random.normal(jax.random.key(1), (4, 16, 16, 3)), "label": jnp.array([0, 1, 2, 3])}
    traced = []

    def preprocess(b, k):
        traced.append(1)  # runs once per trace
        return b["image"], b["label"]

    steps = algorithms.make_train_steps(algo, preprocess, donate=False)
    assert set(steps) == set(algo.phases)
    for phase, step in steps.items():
        traced.clear()
        state = state0
        for i in range(3):
            state, metrics = step(state, batch, jax.random.key(i))
        assert len(traced) == 1, f"{name}/{phase} step retraced"
        chex.assert_trees_all_equal(jax.tree.map(lambda a: a.shape, state), shapes)
        chex.assert_tree_all_finite((state.fwd_params, state.fb_params, metrics))
        assert int(state.step) == 3
        scalars = algo.scalars(jax.device_get(metrics), phase)
        assert {"train/loss", "train/accuracy"} <= set(scalars)
        assert all(isinstance(v, float) for v in scalars.values())


@pytest.mark.parametrize("name", [n for n in ALL if n != "ddtp"])  # DDTP: LeNet only, as the paper
def test_every_layerwise_algorithm_steps_simple_vgg(name):
    """SimpleVGG (narrow) under every algorithm of the DTP family and BP: finite, all weights move."""
    c = tiny_config("dtp", **{"data.synthetic_shape": (32, 32, 3)})
    c.model = architectures.model_config("simple_vgg", channels=(4, 4, 4, 4, 4))
    c.dtp.noise_scale = (0.1,) * 5
    c.dtp.num_fb_iters = (2,) * 5
    c.dtp.fb_lr = (0.01,) * 5
    if name != "dtp":
        algorithms.switch(c, name)
    algo = build_algorithm(c)
    state0 = algo.init_state(jax.random.key(0))
    batch = {"image": jax.random.normal(jax.random.key(1), (4, 32, 32, 3)), "label": jnp.array([0, 1, 2, 3])}
    step = algorithms.make_train_steps(algo, donate=False)[algo.phases[0]]
    state, metrics = step(state0, batch, jax.random.key(2))
    chex.assert_tree_all_finite((state.fwd_params, state.fb_params, metrics))
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.fwd_params, state0.fwd_params)
    assert all(jax.tree.leaves(moved)), moved


@pytest.mark.parametrize("name", ALL)
def test_same_key_reproduces_a_step(name):
    algo = build_algorithm(tiny_config(name))
    step = algorithms.make_train_steps(algo, donate=False)[algo.phases[0]]
    s0 = algo.init_state(jax.random.key(0))
    batch = {"image": jax.random.normal(jax.random.key(1), (4, 16, 16, 3)), "label": jnp.array([0, 1, 2, 3])}
    a, _ = step(s0, batch, jax.random.key(5))
    b, _ = step(s0, batch, jax.random.key(5))
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a.fwd_params[0]["kernel"], s0.fwd_params[0]["kernel"])


@pytest.mark.parametrize("name", sorted(LEARNS))
def test_learns_above_chance_in_a_few_dozen_steps(tmp_path, name):
    config = tiny_config(
        name,
        **{
            "num_train_steps": 60,
            "data.augment": False,
            "data.synthetic_num_classes": 4,
            "gmp_every_steps": 0,
            "log_every_steps": 60,
            "checkpoint_every_steps": 60,
            **LEARNS[name],
        },
    )
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["final_test_accuracy"] > 0.5, results["final_test_accuracy"]  # chance: 0.25


def test_tp_runs_but_is_not_expected_to_learn_here(tmp_path):
    """TP has no difference correction: with dimension-reducing blocks G cannot invert F, the hidden
    targets G(t) pull the representations together, and the tiny task stays at chance (the failure
    that motivated DTP, paper §3.1). The run must still be finite and complete."""
    results = train.train_and_evaluate(tiny_config("tp", num_train_steps=4), str(tmp_path))
    assert results["steps"] == 4 and np.isfinite(results["final_test_loss"])


@pytest.mark.parametrize("name", ALL)
def test_gmp_compares_the_algorithms_own_update(name):
    algo = build_algorithm(tiny_config(name))
    if name == "bp":
        assert not algo.has_gmp
        with pytest.raises(ValueError, match="no GMP update"):
            algorithms.make_gmp_fn(algo)
        return
    state = algo.init_state(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
    labels = jnp.array([0, 1, 2, 3])
    dists, angles, ratios = algorithms.make_gmp_fn(algo)(state.fwd_params, state.fb_params, x, labels)
    chex.assert_shape((dists, angles, ratios), (algo.net.num_blocks,))
    assert float(angles[-1]) < 1.0  # the output target needs no feedback weights: ∝ the BP gradient


def test_each_algorithm_validates_only_its_own_sections():
    """A BP config carries no DTP lists; a DTP section left in a BP config is an error, not ignored."""
    bp = tiny_config("bp")
    assert "dtp" not in bp and "optim" in bp
    build_algorithm(bp)
    mixed = tiny_config("dtp")
    mixed.algorithm = "bp"
    with pytest.raises(config_base.ConfigError, match=r"does not use the section\(s\) \['dtp'\]"):
        build_algorithm(mixed)
    ddtp = tiny_config("ddtp")
    assert "optim" not in ddtp and "dtp" not in ddtp


def test_run_loop_names_no_algorithm():
    """jdtp/train.py talks to the algorithm interface only (README "Architecture")."""
    path = os.path.join(os.path.dirname(train.__file__), "train.py")
    source = open(path).read()
    tree = ast.parse(source)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not imported & {"dtp", "ddtp", "vanilla", "bp", "drl", "feedback", "targets"}, imported
    words = set(re.findall(r"\b\w+\b", source))
    for name in ALL:
        assert name not in words, f"train.py names the algorithm {name!r}"
    assert "is_ddtp" not in words and "is_dtp" not in words


@pytest.mark.parametrize("name", [n for n in ALL if "optim" in algorithms.get(n).default_sections()])
def test_layer_lr_scale_zero_freezes_a_layer_and_leaves_the_others_step(name):
    """optim.layer_lr_scale = (0, 1, 1, 1): layer 0 keeps its weights, the others take the same step."""
    batch = {"image": jax.random.normal(jax.random.key(1), (4, 16, 16, 3)), "label": jnp.array([0, 1, 2, 3])}
    after = {}
    for scales in ((), (0.0, 1.0, 1.0, 1.0)):
        algo = build_algorithm(tiny_config(name, **{"optim.layer_lr_scale": scales}))
        state0 = algo.init_state(jax.random.key(0))
        step = algorithms.make_train_steps(algo, donate=False)[algo.phases[0]]
        after[scales], _ = step(state0, batch, jax.random.key(2))
    plain, frozen = after[()], after[(0.0, 1.0, 1.0, 1.0)]
    chex.assert_trees_all_equal(frozen.fwd_params[0], state0.fwd_params[0])
    assert not np.allclose(plain.fwd_params[0]["kernel"], state0.fwd_params[0]["kernel"])
    chex.assert_trees_all_equal(frozen.fwd_params[1:], plain.fwd_params[1:])
    chex.assert_trees_all_equal(frozen.fb_params, plain.fb_params)
