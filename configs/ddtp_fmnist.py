"""DDTP-linear baseline on Fashion-MNIST: s-DDTP (default) and p-DDTP (variant ``p``); design §8.4.

Paper Table 1: s-DDTP 88.86 ± 0.44, p-DDTP 89.42 ± 0.69. Commands (CPU or one GPU):
    python -m jdtp.main --config=configs/ddtp_fmnist.py --workdir=workdirs/sddtp_fmnist
    python -m jdtp.main --config=configs/ddtp_fmnist.py:p --workdir=workdirs/pddtp_fmnist

What the variants train and which hyperparameters: ``jdtp/ddtp_configs.py`` (design §8.4).
"""

from jdtp import ddtp_configs


def get_config(variant: str = ""):
    return ddtp_configs.ddtp_config("fashion_mnist", variant)
