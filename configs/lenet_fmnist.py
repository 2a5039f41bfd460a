"""LeNet on Fashion-MNIST with L-DRL DTP (paper Table 1: DTP 90.91 ± 0.17, BP 91.94 ± 0.33; 5 seeds).

Command (CPU or one GPU; 40 epochs):
    python -m jdtp.main --config=configs/lenet_fmnist.py --workdir=workdirs/lenet_fmnist
    python -m jdtp.main --config=configs/lenet_fmnist.py:bp --workdir=workdirs/lenet_fmnist_bp

Hyperparameters: paper Table 6 (DTP) and Table 5 (BP), design §4.4-4.5.
"""

from jdtp import config_base


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="lenet")
    c.data.name = "fashion_mnist"
    c.data.batch_size = 33
    c.dtp.beta = 0.3651375179883248
    c.dtp.noise_scale = (0.3885862406080412, 0.2373096461112338, 0.15496346129996677)
    c.dtp.num_fb_iters = (41, 15, 19)
    c.dtp.fb_lr = (0.01099976940762419, 0.00026356477629680596, 0.06692513019217786)
    c.optim.lr = 0.005697551532646145
    c.num_epochs = 40
    bp = {"optim.lr": 0.01374, "data.batch_size": 140}
    return config_base.apply_common_variants(c, config_base.parse_variant(variant), {"bp": bp})
