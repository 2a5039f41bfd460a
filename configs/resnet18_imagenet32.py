"""ResNet-18 on ImageNet 32×32 (1000 classes) with L-DRL DTP. UNTUNED: the reference has this
network but no tuned hyperparameters and no published result for it (spec §3.4).

Command (GPUs or a TPU pod; 90 epochs of 1.28M images):
    python -m jdtp.main --config=configs/resnet18_imagenet32.py --workdir=workdirs/resnet18_imagenet32
    python -m jdtp.main --config=configs/resnet18_imagenet32.py:bp --workdir=workdirs/resnet18_imagenet32_bp

Hyperparameters: the reference's ``DTP.HParams`` defaults for β, σ and lr_b (β 0.7,
σ [0.4, 0.4, 0.2, 0.2, 0.08], lr_b [1e-4, 3.5e-4, 8e-3, 8e-3, 0.18]) with the changes of the
paper's ImageNet 32×32 run (Table 7, spec §4.2, as configs/vgg_imagenet32.py):
K [25, 35, 40, 60, 25], lr_f 0.01, batch 256, cosine, 90 epochs. BP: SGD lr 0.01,
StepLR(30, 0.1), batch 256 (spec §4.5). Top-1 and top-5 are logged.
"""

from jdtp import config_base


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="resnet18")
    c.data.name = "imagenet32"
    c.data.batch_size = 256
    c.dtp.beta = 0.7
    c.dtp.noise_scale = (0.4, 0.4, 0.2, 0.2, 0.08)
    c.dtp.num_fb_iters = (25, 35, 40, 60, 25)
    c.dtp.fb_lr = (1e-4, 3.5e-4, 8e-3, 8e-3, 0.18)
    c.optim.lr = 0.01
    c.num_epochs = 90
    bp = {"optim.lr": 0.01, "optim.schedule": "step", "optim.step_size": 30, "optim.gamma": 0.1}
    return config_base.apply_common_variants(c, config_base.parse_variant(variant), bp)
