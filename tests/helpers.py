"""Shared test helpers: tiny configs that run in seconds on 2 cores."""

import os

from jdtp import algorithms, architectures, config_base, datasets

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def tiny_config(algorithm: str = "dtp", **overrides):
    """LeNet (narrow) on synthetic 16×16×3 data with ``algorithm``'s small hyperparameters.

    ``overrides`` are dotted keys, e.g. ``tiny_config('dtp', **{'dtp.beta': 0.1})``.
    """
    c = config_base.get_base_config("dtp", model="lenet")
    c.model.channels = (4, 8)
    c.model.hidden = 16
    c.data.name = "synthetic"
    c.data.synthetic_shape = (16, 16, 3)
    c.data.synthetic_train_size = 64
    c.data.synthetic_eval_size = 24
    c.data.batch_size = 16
    c.data.eval_batch_size = 16
    c.dtp.beta = 0.5
    c.dtp.noise_scale = (0.1, 0.1, 0.1)
    c.dtp.num_fb_iters = (2, 2, 2)
    c.dtp.fb_lr = (0.01, 0.01, 0.01)
    c.optim.lr = 0.01
    c.num_train_steps = 4
    c.log_every_steps = 1
    c.gmp_every_steps = 2
    c.checkpoint_every_steps = 2
    c.mesh_devices = 1
    if algorithm != "dtp":
        algorithms.switch(c, algorithm)
        if algorithm == "ddtp":
            d = c.ddtp
            d.target_stepsize = 0.05
            d.lr = (1e-3, 2e-3, 3e-3, 4e-3)
            d.eps = (1e-8,) * 4
            d.num_fb_iters = (2, 1, 3)
            d.sigma = (0.01, 0.02, 0.03)
            d.lr_fb, d.eps_fb, d.feedback_wd = 1e-3, 1e-8, 1e-4
    for k, v in overrides.items():
        config_base.set_dotted(c, k, v)
    return c


def load_config(name: str, variant: str = ""):
    """A config file of ``configs/`` as the command line loads it (locked)."""
    from absl import flags
    from ml_collections import config_flags

    arg = f"{os.path.join(CONFIG_DIR, name)}" + (f":{variant}" if variant else "")
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=["p"])
    fv(["p", f"--config={arg}"])
    return fv.config


def build_algorithm(config, steps_per_epoch: int = 10):
    """The algorithm of ``config`` on its network (as the run loop builds it)."""
    info = datasets.get_info(config.data.name, config.data)
    net = architectures.build_from_config(config.model, info.shape, info.num_classes)
    return algorithms.create(config, net, steps_per_epoch)


def abstract_state(config):
    """A step-0 state of ``config``'s algorithm (structure for restoring checkpoints)."""
    import jax

    return build_algorithm(config).init_state(jax.random.key(0))


def data_config(**overrides):
    """The base config's ``data`` section with ``overrides``."""
    data = config_base.get_base_config().data
    for k, v in overrides.items():
        data[k] = v
    return data


def small_synthetic_data(**overrides):
    """A ``data`` section of a tiny synthetic dataset (40 train, 24 eval images of 6×5×3, 4 classes)."""
    kw = dict(
        name="synthetic",
        synthetic_shape=(6, 5, 3),
        synthetic_num_classes=4,
        synthetic_train_size=40,
        synthetic_eval_size=24,
    )
    kw.update(overrides)
    return data_config(**kw)
