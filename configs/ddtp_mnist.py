"""DDTP-linear baseline on MNIST: s-DDTP (default) and p-DDTP (variant ``p``); design §8.4.

Paper Table 1: s-DDTP 98.59 ± 0.16, p-DDTP 98.58 ± 0.13. Commands (CPU or one GPU):
    python -m jdtp.main --config=configs/ddtp_mnist.py --workdir=workdirs/sddtp_mnist
    python -m jdtp.main --config=configs/ddtp_mnist.py:p --workdir=workdirs/pddtp_mnist

What the variants train and which hyperparameters: ``jdtp/ddtp_configs.py`` (design §8.4).
"""

from jdtp import ddtp_configs


def get_config(variant: str = ""):
    return ddtp_configs.ddtp_config("mnist", variant)
