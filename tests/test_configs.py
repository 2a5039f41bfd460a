"""Every experiment config loads, validates and takes command-line overrides (issue: configs)."""

import glob
import os

import pytest
from absl import flags
from ml_collections import config_flags

from jdtp import config_base, ddtp_configs, input_pipeline, train

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
FILES = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))
VARIANTS = {
    "lenet_cifar10.py": ["", "bp", "table6", "smoke", "bp,smoke", "gpu", "tpu", "bp,tpu"],
    **{
        f"ddtp_{d}.py": ["", "s", "p", "bp", "smoke", "p,smoke", "gpu"]
        for d in ("mnist", "fmnist", "cifar10")
    },
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


def _num_fb(config):
    info = input_pipeline.get_info(config.data.name, config.data)
    return train.build_network(config, info).num_trainable_fb


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
    n = _num_fb(config)
    config_base.validate_config(config, n)
    default = "ddtp" if os.path.basename(path).startswith("ddtp_") else "dtp"
    assert config.algorithm == ("bp" if "bp" in variant else default)
    new_k = tuple(range(1, n + 1))
    overridden = _load(path, variant, [f"--config.dtp.num_fb_iters={new_k}", "--config.dtp.beta=0.25"])
    assert tuple(overridden.dtp.num_fb_iters) == new_k
    assert overridden.dtp.beta == 0.25
    config_base.validate_config(overridden, n)


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


def test_wrong_length_per_layer_list_fails_naming_the_field():
    config = _load(os.path.join(CONFIG_DIR, "vgg_cifar10.py"), "", ["--config.dtp.noise_scale=(0.1,0.2)"])
    with pytest.raises(config_base.ConfigError) as e:
        config_base.validate_config(config, _num_fb(config))
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
        ("--config.algorithm=ddtp2", "config.algorithm"),
        ("--config.optim.schedule=linear", "config.optim.schedule"),
    ],
)
def test_out_of_range_values_fail_naming_the_field(override, field):
    config = _load(os.path.join(CONFIG_DIR, "lenet_mnist.py"), "", [override])
    with pytest.raises(config_base.ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        config_base.validate_config(config, 3)


def test_accelerator_variants_set_precision_and_library_convs():
    for v in ("gpu", "tpu"):
        c = _load(os.path.join(CONFIG_DIR, "vgg_imagenet32.py"), v)
        assert c.matmul_precision == "highest" and c.model.conv_impl == "xla"
        assert c.data.batch_size == 256  # the paper's global batch


def test_unknown_variant_is_rejected():
    with pytest.raises(Exception, match="unknown config variant"):
        _load(os.path.join(CONFIG_DIR, "lenet_mnist.py"), "fast")


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
        config_base.validate_config(config, 3)
