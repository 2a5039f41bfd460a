"""LeNet on MNIST with L-DRL DTP (paper Table 1: DTP 98.93 ± 0.04, BP 98.92 ± 0.04; 5 seeds).

Command (CPU or one GPU; 40 epochs):
    python -m jdtp.main --config=configs/lenet_mnist.py --workdir=workdirs/lenet_mnist
    python -m jdtp.main --config=configs/lenet_mnist.py:bp --workdir=workdirs/lenet_mnist_bp

Hyperparameters: paper Table 6 (DTP) and Table 5 (BP), design §4.4-4.5. The reference
keeps horizontal flips for digits (design §10.20). Data: TFDS 'mnist' (point
--config.data.data_dir at a prepared copy when offline).
"""

from jdtp import config_base


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="lenet")
    c.data.name = "mnist"
    c.data.batch_size = 107
    c.dtp.beta = 0.4768550374762699
    c.dtp.noise_scale = (0.4, 0.4, 0.2)
    c.dtp.num_fb_iters = (18, 23, 12)
    c.dtp.fb_lr = (0.06813589667087301, 0.006643595431387696, 0.018743666114857397)
    c.optim.lr = 0.02046745493369468
    c.num_epochs = 40
    bp = {"optim.lr": 0.007938, "data.batch_size": 166}
    return config_base.apply_common_variants(c, config_base.parse_variant(variant), {"bp": bp})
