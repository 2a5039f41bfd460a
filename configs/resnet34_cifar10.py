"""ResNet-34 on CIFAR-10 with L-DRL DTP. UNTUNED: the reference has this network but no tuned
hyperparameters and no published result for it (design §3.4).

Command (one GPU; 90 epochs):
    python -m jdtp.main --config=configs/resnet34_cifar10.py --workdir=workdirs/resnet34_cifar10
    python -m jdtp.main --config=configs/resnet34_cifar10.py:bp --workdir=workdirs/resnet34_cifar10_bp

Hyperparameters and variants: those of ``configs/resnet18_cifar10.py`` (the reference's
``DTP.HParams`` defaults), with ResNet-34's [3, 4, 6, 3] BasicBlocks.
"""

import os

from jdtp import config_base


def get_config(variant: str = ""):
    c = config_base.load_config_file(os.path.join(os.path.dirname(__file__), "resnet18_cifar10.py"), variant)
    c.model.name = "resnet34"  # the same model options as ResNet-18
    return c
