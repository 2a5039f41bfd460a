"""Every experiment config loads, validates and takes command-line overrides; one error per bad value."""

import glob
import os

import pytest
from absl import flags
from helpers import CONFIG_DIR
from ml_collections import config_flags

from jdtp import algorithms, config_base, ddtp_configs, train

FILES = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))
VARIANTS = {
    "lenet_cifar10.py": [
        "",
        "bp",
        "table6",
        "smoke",
        "bp,smoke",
        "gpu",
        "tpu",
        "bp,tpu",
        "vanilla_dtp",
        "tp",
    ],
    "lenet_fmnist.py": ["", "bp", "bp_step", "bp_step,smoke", "smoke", "gpu", "tpu"],
    **{f"ddtp_{d}.py": ["", "s", "p", "smoke", "p,smoke", "gpu"] for d in ("mnist", "fmnist", "cifar10")},
}


def _cases():
    for path in FILES:
        for variant in VARIANTS.get(os.path.basename(path), ["", "bp", "smoke", "gpu", "tpu"]):
            yield path, variant


def _load(path, variant, overrides=()):
    arg = f"{path}:{variant}" if variant else path
    argv = ["prog", f"--config={arg}", *overrides]
    fv = flags.FlagValues()
    # The override flags are read from sys_argv (sys.argv by default, as in jdtp.main).
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    return fv.config


def _validate(config):
    """What a run checks before it loads data: common keys, the network, the algorithm's sections."""
    return train.setup(config).algo


def test_all_experiment_files_present():
    names = {os.path.basename(p) for p in FILES}
    assert {
        "lenet_mnist.py",
        "lenet_fmnist.py",
        "lenet_cifar10.py",
        "vgg_cifar10.py",
        "vgg_imagenet32.py",
        "lenet_digits.py",
        "ddtp_mnist.py",
        "ddtp_fmnist.py",
        "ddtp_cifar10.py",
    } <= names


@pytest.mark.parametrize("path,variant", list(_cases()))
def test_config_loads_validates_and_takes_tuple_override(path, variant):
    config = _load(path, variant)
    algo = _validate(config)
    default = "ddtp" if os.path.basename(path).startswith("ddtp_") else "dtp"
    chosen = {"bp", "vanilla_dtp", "tp"} & config_base.parse_variant(variant)
    assert config.algorithm == (chosen.pop() if chosen else default) == algo.name
    # Exactly the algorithm's sections: a BP config carries no DTP lists, a DDTP config no optim.
    assert set(config.keys()) & algorithms.all_sections() == set(type(algo).sections)
    section = config.algorithm if config.algorithm in config else None
    if section and "num_fb_iters" in config[section]:
        n = len(config[section].num_fb_iters)
        new_k = tuple(range(1, n + 1))
        overridden = _load(path, variant, [f"--config.{section}.num_fb_iters={new_k}"])
        assert tuple(overridden[section].num_fb_iters) == new_k
        _validate(overridden)
    if config.algorithm == "bp":  # no DTP section to override
        with pytest.raises(Exception, match="dtp"):
            _load(path, variant, ["--config.dtp.beta=0.25"])


def test_paper_hyperparameters_are_in_the_configs():
    vgg = _load(os.path.join(CONFIG_DIR, "vgg_cifar10.py"), "")
    assert tuple(vgg.dtp.num_fb_iters) == (20, 30, 35, 55, 20)
    assert vgg.dtp.beta == 0.7 and vgg.optim.lr == 0.05 and vgg.data.batch_size == 128
    lenet = _load(os.path.join(CONFIG_DIR, "lenet_cifar10.py"), "")
    assert tuple(lenet.dtp.num_fb_iters) == (41, 51, 24) and lenet.data.batch_size == 144
    t6 = _load(os.path.join(CONFIG_DIR, "lenet_cifar10.py"), "table6")
    assert t6.data.batch_size == 100 and tuple(t6.dtp.fb_lr) == (0.001, 0.005, 0.045)
    bp = _load(os.path.join(CONFIG_DIR, "vgg_imagenet32.py"), "bp")
    assert bp.optim.schedule == "step" and bp.optim.lr == 0.01
    s = _load(os.path.join(CONFIG_DIR, "ddtp_cifar10.py"), "")
    assert s.model.activation == "tanh" and not s.data.augment and s.data.batch_size == 128
    assert (s.ddtp.epochs_fb, s.ddtp.extra_fb_epochs, tuple(s.ddtp.num_fb_iters)) == (10, 1, (1, 1, 1))
    assert s.ddtp.lr_fb == 0.0045157498494467095 and s.ddtp.semantics == "fork"
    p = _load(os.path.join(CONFIG_DIR, "ddtp_mnist.py"), "p")
    assert tuple(p.ddtp.num_fb_iters) == (49, 32, 54) and (p.ddtp.epochs_fb, p.ddtp.extra_fb_epochs) == (0, 0)
    assert p.ddtp.target_stepsize == 0.0428 and p.data.batch_size == 138
    with pytest.raises(config_base.ConfigError, match="'s' .* 'p'"):
        ddtp_configs.ddtp_config("mnist", "s,p")
    # The untuned baselines take the experiment's lists and β (design §8.2).
    tp = _load(os.path.join(CONFIG_DIR, "lenet_mnist.py"), "tp")
    mnist = _load(os.path.join(CONFIG_DIR, "lenet_mnist.py"), "")
    assert tuple(tp.tp.num_fb_iters) == tuple(mnist.dtp.num_fb_iters) and tp.tp.beta == mnist.dtp.beta
    assert tp.optim.lr == 1e-3
    # Not the paper's setting: DTP's step beta * lr_f made BP's Fashion-MNIST lr, nothing else changed.
    fm, step = (_load(os.path.join(CONFIG_DIR, "lenet_fmnist.py"), v) for v in ("", "bp_step"))
    assert fm.optim.lr == 0.005697551532646145 and step.dtp.beta * step.optim.lr == pytest.approx(0.01374)
    assert step.algorithm == "dtp" and {**step.to_dict(), "optim": None} == {**fm.to_dict(), "optim": None}


def test_base_config_is_neutral():
    """No experiment's values in the base: unset keys fail naming the key and the fix."""
    c = config_base.get_base_config("dtp")
    assert c.dtp.beta is None and tuple(c.dtp.noise_scale) == () and c.optim.lr is None
    c.dtp.beta = 0.5
    with pytest.raises(
        config_base.ConfigError, match=r"config.optim.lr is not set; set it in the experiment"
    ):
        _validate(c)
    c.optim.lr = 0.1
    with pytest.raises(config_base.ConfigError, match=r"config.dtp.noise_scale is not set"):
        _validate(c)


def test_wrong_length_per_layer_list_fails_naming_the_field():
    config = _load(os.path.join(CONFIG_DIR, "vgg_cifar10.py"), "", ["--config.dtp.noise_scale=(0.1,0.2)"])
    with pytest.raises(config_base.ConfigError) as e:
        _validate(config)
    msg = str(e.value)
    assert "config.dtp.noise_scale has 2 entries (0.1, 0.2), expected 5" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "override,field",
    [
        ("--config.dtp.beta=-1.0", "config.dtp.beta"),
        ("--config.dtp.num_fb_iters=(0,1,1)", "config.dtp.num_fb_iters[0]"),
        ("--config.dtp.fb_lr=(0.1,-0.1,0.1)", "config.dtp.fb_lr[1]"),
        ("--config.dtp.unpool_mode=max", "config.dtp.unpool_mode"),
        ("--config.dtp.probe=fd", "config.dtp.probe"),
        ("--config.dtp.fb_optimizer=rmsprop", "config.dtp.fb_optimizer"),
        ("--config.algorithm=ddtp2", "config.algorithm"),
        ("--config.algorithm=bp", "does not use the section"),
        ("--config.optim.schedule=linear", "config.optim.schedule"),
        ("--config.model.hidden=-3", "config.model"),
        ("--config.data.batch_size=0", "config.data.batch_size"),
        ("--config.evals_per_epoch=0", "config.evals_per_epoch"),
        ("--config.eval_every_steps=-5", "config.eval_every_steps"),
    ],
)
def test_out_of_range_values_fail_naming_the_field(override, field):
    config = _load(os.path.join(CONFIG_DIR, "lenet_mnist.py"), "", [override])
    with pytest.raises(
        (config_base.ConfigError, ValueError), match=field.replace("[", r"\[").replace("]", r"\]")
    ):
        _validate(config)


def test_accelerator_variants_set_precision_and_library_convs():
    for v in ("gpu", "tpu"):
        c = _load(os.path.join(CONFIG_DIR, "vgg_imagenet32.py"), v)
        assert c.matmul_precision == "highest" and c.model.conv_impl == "xla"
        assert c.data.batch_size == 256  # the paper's global batch


def test_unknown_variant_is_rejected():
    with pytest.raises(Exception, match="unknown config variant"):
        _load(os.path.join(CONFIG_DIR, "lenet_mnist.py"), "fast")
    with pytest.raises(Exception, match="pick one"):
        _load(os.path.join(CONFIG_DIR, "lenet_mnist.py"), "bp,tp")


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.ddtp.lr=(0.1,0.1)", "config.ddtp.lr has 2 entries (0.1, 0.1), expected 4: one per block"),
        ("--config.ddtp.num_fb_iters=(1,1)", "config.ddtp.num_fb_iters has 2 entries (1, 1), expected 3"),
        ("--config.ddtp.sigma=(0.1,-0.1,0.1)", r"config.ddtp.sigma\[1\]=-0.1, expected > 0"),
        ("--config.ddtp.semantics=torch", "config.ddtp.semantics='torch'"),
    ],
)
def test_ddtp_fields_are_validated(override, message):
    config = _load(os.path.join(CONFIG_DIR, "ddtp_mnist.py"), "", [override])
    with pytest.raises(config_base.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _validate(config)


def test_figure_configs_load():
    for name, variants in (("fig2_jmc.py", [""]), ("fig3_gmp.py", ["", "cpu"])):
        for v in variants:
            c = config_base.load_config_file(os.path.join(CONFIG_DIR, "figures", name), v)
            assert c.matmul_precision == "highest"
    gmp = config_base.load_config_file(os.path.join(CONFIG_DIR, "figures", "fig3_gmp.py"))
    assert gmp.beta == _load(os.path.join(CONFIG_DIR, "lenet_cifar10.py"), "").dtp.beta  # one source
