"""ResNet-18 (width 16) on Fashion-MNIST padded to 32×32: DTP with the ``jacobian`` G against BP.

    python -m jdtp.sweep --sweep=configs/sweeps/resnet18_fmnist.py --dir=results/sweeps/resnet18_fmnist \\
        --set=data.data_dir=/path/to/tfds --parallel=2
    python -m jdtp.tables --sweep_dir=results/sweeps/resnet18_fmnist --out=docs/results/resnet18_fmnist_training

configs/resnet18_fmnist.py's hyperparameters (DTP) and its ``bp`` variant; 1 epoch and 2 seeds, the
2-core CPU budget of docs/results; every run evaluated 4 times per epoch, DTP's GMP angles
logged every 50 steps.
"""

import ml_collections


def get_config(variant: str = ""):
    del variant
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1)
    c.overrides = {"num_epochs": 1, "data": {"download": False}, "gmp_every_steps": 50, "evals_per_epoch": 4}
    c.runs = [
        {"label": "dtp", "config": "configs/resnet18_fmnist.py"},
        {"label": "bp", "config": "configs/resnet18_fmnist.py:bp"},
    ]
    return c
