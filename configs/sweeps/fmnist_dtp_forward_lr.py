"""Is DTP's early plateau on Fashion-MNIST its small forward step? LeNet, paper hyperparameters.

    python -m jdtp.sweep --sweep=configs/sweeps/fmnist_dtp_forward_lr.py \\
        --dir=results/sweeps/fmnist_dtp_forward_lr --set=data.data_dir=/path/to/tfds
    python -m jdtp.tables --sweep_dir=results/sweeps/fmnist_dtp_forward_lr \\
        --out=docs/results/fmnist_dtp_forward_lr

``dtp`` and ``bp`` are Table 1's Fashion-MNIST runs; ``dtp-lr-x2.5`` is DTP with 2.5 times the
paper's forward lr and ``dtp-bp-step`` DTP with it raised to BP's lr / β, 6.6 times
(``configs/lenet_fmnist.py:bp_step``); ``bp-dtp-step`` is the control the other way round: BP
with DTP's batch (33) and DTP's step along the gradient when its feedback is aligned, β·lr_f
(0.0021 instead of 0.01374), so that it differs from DTP only in where the update's direction
comes from. All three **not the paper's setting**. Evaluated
16 times per epoch like the Table 1 sweeps, GMP angles every 50 steps; 1 epoch, the 2-core CPU's
budget.
"""

import os

import ml_collections

from jdtp import config_base

# The paper's DTP hyperparameters, read from the experiment file that states them (Table 6).
_DTP = config_base.load_config_file(os.path.join(os.path.dirname(__file__), "..", "lenet_fmnist.py"))
DTP_LR = _DTP.optim.lr


def get_config(variant: str = ""):
    del variant
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1, 2)
    c.overrides = {"num_epochs": 1, "data": {"download": False}, "gmp_every_steps": 50, "evals_per_epoch": 16}
    c.runs = [
        {"label": "bp", "config": "configs/lenet_fmnist.py:bp"},
        {"label": "dtp", "config": "configs/lenet_fmnist.py"},
        {
            "label": "dtp-lr-x2.5",
            "config": "configs/lenet_fmnist.py",
            "overrides": {"optim": {"lr": 2.5 * DTP_LR}},
        },
        {"label": "dtp-bp-step", "config": "configs/lenet_fmnist.py:bp_step"},
        {
            "label": "bp-dtp-step",
            "config": "configs/lenet_fmnist.py:bp",
            "overrides": {
                "optim": {"lr": _DTP.dtp.beta * DTP_LR},
                "data": {"batch_size": _DTP.data.batch_size},
            },
        },
    ]
    return c
