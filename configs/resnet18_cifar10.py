"""ResNet-18 on CIFAR-10 with L-DRL DTP. UNTUNED: the reference has this network but no tuned
hyperparameters and no published result for it (design §3.4).

Command (one GPU; 90 epochs):
    python -m jdtp.main --config=configs/resnet18_cifar10.py --workdir=workdirs/resnet18_cifar10
    python -m jdtp.main --config=configs/resnet18_cifar10.py:bp --workdir=workdirs/resnet18_cifar10_bp

Hyperparameters: the reference's ``DTP.HParams`` defaults, which a ResNet run in the reference
gets (design §3.4, §4.1): β 0.7, σ [0.4, 0.4, 0.2, 0.2, 0.08], K [20, 30, 35, 55, 20],
lr_b [1e-4, 3.5e-4, 8e-3, 8e-3, 0.18] for G^1 … G^5 = layer_1 … layer_4, fc; lr_f 0.05,
batch 128, 90 epochs. BP: the VGG baseline's SGD lr 0.05, wd 1e-4, cosine (design §4.5).
Model options: ``--config.model.feedback=adjoint|jacobian`` (jdtp/resnet.py), ``width``.
"""

import os

from jdtp import architectures, config_base


def get_config(variant: str = ""):
    # The reference gives every architecture the same DTP.HParams defaults: SimpleVGG's, stated once
    # in vgg_cifar10.py; only the model differs (its options from jdtp/resnet.py, conv_impl as the variant set it).
    c = config_base.load_config_file(os.path.join(os.path.dirname(__file__), "vgg_cifar10.py"), variant)
    with c.unlocked():
        c.model = architectures.model_config("resnet18", conv_impl=c.model.conv_impl)
    return c
