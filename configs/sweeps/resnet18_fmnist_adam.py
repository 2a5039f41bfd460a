"""ResNet-18 (width 16) on Fashion-MNIST padded to 32×32 with Adam forward steps: DTP, DTP with the lower stages slowed, BP.

    python -m jdtp.sweep --sweep=configs/sweeps/resnet18_fmnist_adam.py --dir=results/sweeps/resnet18_fmnist_adam \\
        --set=data.data_dir=/path/to/tfds --parallel=2 [--only=dtp-adam-lower0.1,bp-adam]
    python -m jdtp.tables --sweep_dir=results/sweeps/resnet18_fmnist_adam --out=docs/results/resnet18_fmnist_adam_lower \\
        --reference=dtp-adam-lower0.1 --include_unfinished

configs/resnet18_fmnist.py (the ``jacobian`` G trained by L-DRL with the ``jvp`` probe and Adam)
with the forward weights also stepped by Adam (torch Adam, coupled weight decay 1e-4, lr 1e-3:
its ``adam`` variant, which also slows layer_0-layer_2):

* ``dtp-adam``: every forward layer at the full step;
* ``dtp-adam-lower0.1``: layer_0-layer_2 (the stem and the first two stages) at a tenth of it
  (``optim.layer_lr_scale``; not the paper's), so that their feedback keeps up with their own F;
* ``dtp-adam-lower0.1-lrb0.3``: the same with G^1-G^3's Adam lr_b at 3e-4 instead of 1e-3: with
  F's lower stages slowed, Adam's constant-size steps in G are the larger motion left;
* ``bp-adam``: the config's ``bp`` variant under the same optimizer, every layer at the full step.

1 epoch and 2 seeds, the 2-core CPU's budget; evaluated every 117 steps (8 times an epoch), DTP's
GMP angles and norm ratios logged every 25 steps.
"""

import ml_collections

_RECIPE = "configs/resnet18_fmnist.py:adam"  # Adam forward steps, layer_0-layer_2 at a tenth


def get_config(variant: str = ""):
    del variant
    c = ml_collections.ConfigDict()
    c.seeds = (0, 1)
    c.overrides = {
        "num_epochs": 1,
        "data": {"download": False},
        "eval_every_steps": 117,
        "log_every_steps": 25,
        "gmp_every_steps": 25,
    }
    c.runs = [
        {"label": "dtp-adam", "config": _RECIPE, "overrides": {"optim": {"layer_lr_scale": ()}}},
        {"label": "dtp-adam-lower0.1", "config": _RECIPE},
        {
            "label": "dtp-adam-lower0.1-lrb0.3",
            "config": _RECIPE,
            "overrides": {"dtp": {"fb_lr": (3e-4, 3e-4, 3e-4, 3e-3, 1e-2)}},
        },
        {"label": "bp-adam", "config": "configs/resnet18_fmnist.py:bp,adam"},
    ]
    return c
