"""SimpleVGG on CIFAR-10 with L-DRL DTP (paper Table 2: DTP 89.38 ± 0.20, BP 89.07 ± 0.22; 5 seeds).

Command (one GPU; 90 epochs):
    python -m jdtp.main --config=configs/vgg_cifar10.py --workdir=workdirs/vgg_cifar10
    python -m jdtp.main --config=configs/vgg_cifar10.py:bp --workdir=workdirs/vgg_cifar10_bp

Hyperparameters: paper Table 7 = the reference's defaults (design §4.1); BP: SGD lr 0.05,
wd 1e-4, cosine, batch 128 (design §4.5).
"""

from jdtp import config_base


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="simple_vgg")
    c.data.name = "cifar10"
    c.data.batch_size = 128
    c.dtp.beta = 0.7
    c.dtp.noise_scale = (0.4, 0.4, 0.2, 0.2, 0.08)
    c.dtp.num_fb_iters = (20, 30, 35, 55, 20)
    c.dtp.fb_lr = (1e-4, 3.5e-4, 8e-3, 8e-3, 0.18)
    c.optim.lr = 0.05
    c.num_epochs = 90
    bp = {"optim.lr": 0.05}
    return config_base.apply_common_variants(c, config_base.parse_variant(variant), {"bp": bp})
