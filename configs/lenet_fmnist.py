"""LeNet on Fashion-MNIST with L-DRL DTP (paper Table 1: DTP 90.91 ± 0.17, BP 91.94 ± 0.33; 5 seeds).

Command (CPU or one GPU; 40 epochs):
    python -m jdtp.main --config=configs/lenet_fmnist.py --workdir=workdirs/lenet_fmnist
    python -m jdtp.main --config=configs/lenet_fmnist.py:bp --workdir=workdirs/lenet_fmnist_bp

Hyperparameters: paper Table 6 (DTP) and Table 5 (BP), design §4.4-4.5.

Variant ``bp_step`` (ours, **not the paper's setting**): DTP with the forward lr raised to BP's lr
/ β, so that with aligned feedback its update β·lr_f·∇ is as long as BP's step (0.01374 instead of
β·lr_f = 0.0021); everything else is DTP's. It asks whether DTP's early plateau on Fashion-MNIST
comes from its small forward step rather than from the method (README, *Table 1*).
"""

from jdtp import config_base

BP_LR = 0.01374  # paper Table 5, Fashion-MNIST BP


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="lenet")
    variants = config_base.parse_variant(variant)
    c.data.name = "fashion_mnist"
    c.data.batch_size = 33
    c.dtp.beta = 0.3651375179883248
    c.dtp.noise_scale = (0.3885862406080412, 0.2373096461112338, 0.15496346129996677)
    c.dtp.num_fb_iters = (41, 15, 19)
    c.dtp.fb_lr = (0.01099976940762419, 0.00026356477629680596, 0.06692513019217786)
    c.optim.lr = 0.005697551532646145
    c.num_epochs = 40
    bp = {"optim.lr": BP_LR, "data.batch_size": 140}
    if "bp_step" in variants:
        c.optim.lr = BP_LR / c.dtp.beta
    return config_base.apply_common_variants(c, variants, {"bp": bp}, known=("bp_step",))
