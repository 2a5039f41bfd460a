"""Offline quickstart: LeNet on scikit-learn's bundled 8×8 handwritten digits (no download).

Command (2 CPU cores, a few minutes each):
    python -m jdtp.main --config=configs/lenet_digits.py --workdir=workdirs/digits_dtp
    python -m jdtp.main --config=configs/lenet_digits.py:bp --workdir=workdirs/digits_bp

1,437 training and 360 test images (a fixed split). Not a paper experiment: it shows on
any machine that DTP with L-DRL learns, next to BP. Hyperparameters start from the MNIST
ones (design §4.4) with no augmentation (a 4-pixel crop is half of an 8×8 digit).
"""

from jdtp import config_base


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="lenet")
    c.data.name = "digits"
    c.data.augment = False
    c.data.batch_size = 32
    c.data.eval_batch_size = 360
    c.dtp.beta = 0.4768550374762699
    c.dtp.noise_scale = (0.4, 0.4, 0.2)
    c.dtp.num_fb_iters = (18, 23, 12)
    c.dtp.fb_lr = (0.06813589667087301, 0.006643595431387696, 0.018743666114857397)
    c.optim.lr = 0.02046745493369468
    c.num_epochs = 12
    c.log_every_steps = 20
    c.gmp_every_steps = 200
    c.checkpoint_every_steps = 400
    bp = {"optim.lr": 0.02}
    return config_base.apply_common_variants(c, config_base.parse_variant(variant), {"bp": bp})
