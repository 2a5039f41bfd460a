"""Fig. 2 (JMC of the last layer, fixed random forward weights): ``python -m jdtp.experiments.jmc``.

Paper protocol (design §7.1): 5 seeds (123, 234, …), one batch of 128 per seed, 5000
feedback iterations per arm. L-DRL: σ = 0.08, lr = 0.01 (design §10.14; ``--config.sigma=0.1395
--config.lr=0.0354`` gives the reference script's defaults). DRL: the fork's CIFAR-10 s-DDTP
feedback values (``jdtp.ddtp_configs.S_DDTP['cifar10']``). 167 s on 2 CPU cores.
"""

import ml_collections

from jdtp import ddtp_configs


def get_config(variant: str = ""):
    if variant:
        raise ValueError(f"configs/fig2_jmc.py has no variants, got {variant!r}")
    drl = ddtp_configs.S_DDTP["cifar10"]
    c = ml_collections.ConfigDict()
    c.seeds = 5
    c.iterations = 5000
    c.batch_size = 128
    c.record_every = 10
    c.sigma = 0.08
    c.lr = 0.01
    c.momentum = 0.9
    c.drl_sigma = drl["sigma"][0]  # one σ for all layers in the fork's code
    c.drl_lr = drl["lr_fb"]
    c.drl_eps = drl["eps_fb"]
    c.drl_weight_decay = drl["feedback_wd"]
    c.drl_semantics = "fork"
    c.drl_all_layers = False  # exact shortcut: only Q_fc1 is reported (see jdtp/experiments/jmc.py)
    c.data = "synthetic"  # or a jdtp.datasets dataset name with data_dir
    c.data_dir = ""
    c.synthetic_shape = (32, 32, 3)
    c.float64 = False
    c.matmul_precision = "highest"
    return c
