"""DDTP-linear baseline on CIFAR-10: s-DDTP (default) and p-DDTP (variant ``p``); spec §8.4.

Paper Table 1: s-DDTP 76.33 ± 0.27, p-DDTP 72.15 ± 0.29. Commands (CPU or one GPU):
    python -m jdtp.main --config=configs/ddtp_cifar10.py --workdir=workdirs/sddtp_cifar10
    python -m jdtp.main --config=configs/ddtp_cifar10.py:p --workdir=workdirs/pddtp_cifar10

LeNet-equivalent with tanh, direct linear feedback, DRL loss, per-layer Adam for
the forward weights and one Adam over all feedback weights (fork semantics;
``--config.ddtp.semantics=original`` for Meulemans' own). s-DDTP: 10
feedback-only epochs, then per epoch joint training and one feedback-only epoch,
K = 1 (paper Table 8). p-DDTP: K per layer, no feedback-only epochs (Table 9).
No augmentation. The reference ran in float64; jdtp runs float32.
"""

from jdtp import ddtp_configs


def get_config(variant: str = ""):
    return ddtp_configs.ddtp_config("cifar10", variant)
