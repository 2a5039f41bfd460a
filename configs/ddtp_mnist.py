"""DDTP-linear baseline on MNIST: s-DDTP (default) and p-DDTP (variant ``p``); spec §8.4.

Paper Table 1: s-DDTP 98.59 ± 0.16, p-DDTP 98.58 ± 0.13. Commands (CPU or one GPU):
    python -m jdtp.main --config=configs/ddtp_mnist.py --workdir=workdirs/sddtp_mnist
    python -m jdtp.main --config=configs/ddtp_mnist.py:p --workdir=workdirs/pddtp_mnist

LeNet-equivalent with tanh, direct linear feedback, DRL loss, per-layer Adam for
the forward weights and one Adam over all feedback weights (fork semantics;
``--config.ddtp.semantics=original`` for Meulemans' own). s-DDTP: 10
feedback-only epochs, then per epoch joint training and one feedback-only epoch,
K = 1 (paper Table 8). p-DDTP: K per layer, no feedback-only epochs (Table 9).
No augmentation. The reference ran in float64; jdtp runs float32.
"""

from jdtp import ddtp_configs


def get_config(variant: str = ""):
    return ddtp_configs.ddtp_config("mnist", variant)
