"""Table 1, Fashion-MNIST rows: LeNet with DTP (L-DRL), BP, s-DDTP and p-DDTP, the paper's hyperparameters.

    python -m jdtp.sweep --sweep=configs/sweeps/table1_fmnist.py --dir=results/sweeps/table1_fmnist \\
        --set=data.data_dir=/path/to/tfds [--set=num_epochs=40]
    python -m jdtp.tables --sweep_dir=results/sweeps/table1_fmnist --out=docs/results/table1_fmnist

``num_epochs`` counts epochs that train the forward weights (s-DDTP adds its 10 feedback-only
epochs and one after each joint epoch, as its recipe has it). The paper: 40 epochs, 5 seeds.
The defaults here are the 2-core CPU budget of docs/results (1 epoch, 2 seeds).
"""

import ml_collections


def get_config(variant: str = ""):
    del variant
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1)
    c.overrides = {
        "num_epochs": 1,
        "data": {"download": False},
        "gmp_every_steps": 50,  # angle between each algorithm's update and the BP gradient
    }
    # eval_every_steps: about four test evaluations per epoch (each run's own steps per epoch).
    c.runs = [
        {"label": "bp", "config": "configs/lenet_fmnist.py:bp", "overrides": {"eval_every_steps": 107}},
        {"label": "dtp", "config": "configs/lenet_fmnist.py", "overrides": {"eval_every_steps": 454}},
        {"label": "s-ddtp", "config": "configs/ddtp_fmnist.py", "overrides": {"eval_every_steps": 105}},
        {"label": "p-ddtp", "config": "configs/ddtp_fmnist.py:p", "overrides": {"eval_every_steps": 106}},
    ]
    return c
