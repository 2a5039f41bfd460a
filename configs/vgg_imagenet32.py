"""SimpleVGG on ImageNet 32×32 with L-DRL DTP (paper Table 3, one seed: DTP top-1 36.81 / top-5 60.54,
BP 37.47 / 61.25).

Command (GPUs or a TPU pod; 90 epochs of 1.28M images):
    python -m jdtp.main --config=configs/vgg_imagenet32.py --workdir=workdirs/vgg_imagenet32
    python -m jdtp.main --config=configs/vgg_imagenet32.py:bp --workdir=workdirs/vgg_imagenet32_bp

Hyperparameters: paper Table 7 (design §4.2): K [25, 35, 40, 60, 25], lr_f 0.01, batch 256.
BP: SGD lr 0.01, StepLR(30, 0.1), batch 256 (design §4.5). Data: TFDS 'imagenet_resized/32x32'
(train on all 1.28M, evaluate on the official validation set); top-1 and top-5 are logged.
"""

from jdtp import config_base


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="simple_vgg")
    c.data.name = "imagenet32"
    c.data.batch_size = 256
    c.dtp.beta = 0.7
    c.dtp.noise_scale = (0.4, 0.4, 0.2, 0.2, 0.08)
    c.dtp.num_fb_iters = (25, 35, 40, 60, 25)
    c.dtp.fb_lr = (1e-4, 3.5e-4, 8e-3, 8e-3, 0.18)
    c.optim.lr = 0.01
    c.num_epochs = 90
    bp = {"optim.lr": 0.01, "optim.schedule": "step", "optim.step_size": 30, "optim.gamma": 0.1}
    return config_base.apply_common_variants(c, config_base.parse_variant(variant), {"bp": bp})
