"""DDTP-linear baseline on CIFAR-10: s-DDTP (default) and p-DDTP (variant ``p``); design §8.4.

Paper Table 1: s-DDTP 76.33 ± 0.27, p-DDTP 72.15 ± 0.29. Commands (CPU or one GPU):
    python -m jdtp.main --config=configs/ddtp_cifar10.py --workdir=workdirs/sddtp_cifar10
    python -m jdtp.main --config=configs/ddtp_cifar10.py:p --workdir=workdirs/pddtp_cifar10

What the variants train and which hyperparameters: ``jdtp/ddtp_configs.py`` (design §8.4).
"""

from jdtp import ddtp_configs


def get_config(variant: str = ""):
    return ddtp_configs.ddtp_config("cifar10", variant)
