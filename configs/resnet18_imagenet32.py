"""ResNet-18 on ImageNet 32×32 (1000 classes) with L-DRL DTP. UNTUNED: the reference has this
network but no tuned hyperparameters and no published result for it (design §3.4).

Command (GPUs or a TPU pod; 90 epochs of 1.28M images):
    python -m jdtp.main --config=configs/resnet18_imagenet32.py --workdir=workdirs/resnet18_imagenet32
    python -m jdtp.main --config=configs/resnet18_imagenet32.py:bp --workdir=workdirs/resnet18_imagenet32_bp

Hyperparameters: the reference's ``DTP.HParams`` defaults for β, σ and lr_b (β 0.7,
σ [0.4, 0.4, 0.2, 0.2, 0.08], lr_b [1e-4, 3.5e-4, 8e-3, 8e-3, 0.18]) with the changes of the
paper's ImageNet 32×32 run (Table 7, design §4.2, as configs/vgg_imagenet32.py):
K [25, 35, 40, 60, 25], lr_f 0.01, batch 256, cosine, 90 epochs. BP: SGD lr 0.01,
StepLR(30, 0.1), batch 256 (design §4.5). Top-1 and top-5 are logged.
"""

import os

from jdtp import architectures, config_base


def get_config(variant: str = ""):
    # The reference gives every architecture the same DTP.HParams defaults: SimpleVGG's, stated once
    # in vgg_imagenet32.py; only the model differs (its options from jdtp/resnet.py, conv_impl as the variant set it).
    c = config_base.load_config_file(os.path.join(os.path.dirname(__file__), "vgg_imagenet32.py"), variant)
    with c.unlocked():
        c.model = architectures.model_config("resnet18", conv_impl=c.model.conv_impl)
    return c
