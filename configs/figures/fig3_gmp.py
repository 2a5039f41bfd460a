"""Fig. 3 (GMP per layer under five feedback schemes): ``python -m jdtp.experiments.gmp``.

Paper protocol (design §7.2): 5 seeds (123 … 127), one batch of 256, the training β of LeNet on
CIFAR-10 (``configs/lenet_cifar10.py``), L-DRL pre-training K = 5000 per layer with
σ = [0.2, 0.2, 0.1] and lr = [1e-4, 2.5e-3, 0.01], DRL 5000 iterations per hidden layer with the
fork's CIFAR-10 s-DDTP feedback values (``jdtp.ddtp_configs``), both unpool modes.

Variant ``cpu``: the reduced budget of the README's figure (3 seeds, batch 64, K = [400, 5000,
5000] with G^1's lr scaled by 5000/400 to keep K·lr, DRL 1000 iterations per layer; 65 min on
2 cores).
"""

import os

import ml_collections

from jdtp import config_base, ddtp_configs


def get_config(variant: str = ""):
    variants = config_base.parse_variant(variant)
    if variants - {"cpu"}:
        raise ValueError(f"configs/fig3_gmp.py knows the variant 'cpu', got {sorted(variants)}")
    lenet = config_base.load_config_file(os.path.join(os.path.dirname(__file__), "..", "lenet_cifar10.py"))
    drl = ddtp_configs.S_DDTP["cifar10"]
    c = ml_collections.ConfigDict()
    c.seeds = 5
    c.batch_size = 256
    c.beta = lenet.dtp.beta  # DTP target β and DDTP target stepsize (the training β)
    c.iterations = -1  # if >= 0, overrides ldrl_iters (every layer) and drl_iters
    c.ldrl_iters = (5000, 5000, 5000)
    c.ldrl_sigma = (0.2, 0.2, 0.1)
    c.ldrl_lr = (1e-4, 2.5e-3, 0.01)
    c.ldrl_momentum = 0.9
    c.drl_iters = 5000  # per hidden layer, one DDTP feedback call
    c.drl_sigma = drl["sigma"][0]
    c.drl_lr = drl["lr_fb"]
    c.drl_eps = drl["eps_fb"]
    c.drl_weight_decay = drl["feedback_wd"]
    c.drl_semantics = "fork"
    c.unpool_mode = "both"  # 'set', 'add' or 'both' (the L-DRL schemes)
    c.chunk = 100  # pre-training iterations per jitted call
    c.unroll = 2  # lax.scan unroll of pre-training (>= 2 avoids a slow CPU path)
    c.data = "synthetic"
    c.data_dir = ""
    c.synthetic_shape = (32, 32, 3)
    c.float64 = False
    c.matmul_precision = "highest"
    if "cpu" in variants:
        c.seeds = 3
        c.batch_size = 64
        c.ldrl_iters = (400, 5000, 5000)
        c.ldrl_lr = (1.25e-3, 2.5e-3, 0.01)
        c.drl_iters = 1000
    return c
