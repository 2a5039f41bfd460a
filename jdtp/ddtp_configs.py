"""The paper's s-DDTP and p-DDTP hyperparameters (design §8.4, Tables 8 and 9): the one place they live.

Used by ``configs/ddtp_*.py`` (training) and by the Fig. 2 / Fig. 3 experiments
(the DRL arms use the fork's CIFAR-10 s-DDTP values, ``S_DDTP['cifar10']``).

Both variants train Meulemans et al.'s tanh LeNet with direct linear feedback and the DRL
loss (the algorithm and its schedule: :mod:`jdtp.ddtp`), without augmentation. s-DDTP
(default): 10 feedback-only epochs, then per epoch joint training and one feedback-only
epoch, K = 1. p-DDTP (variant ``p``): K_n per layer, no feedback-only epochs. Learning rates
are given before the reference's division by η (``ddtp.normalize_lr``).
"""

from __future__ import annotations

import ml_collections

from jdtp import config_base

# s-DDTP (Table 8). CIFAR-10: the fork's final config (design §8.4); MNIST and
# F-MNIST share one column in the paper (design §12 notes it may be a copy-paste).
S_DDTP = {
    "cifar10": {
        "target_stepsize": 0.015962099947441903,
        "lr": (2.5935571806476586e-4, 8.85500279951265e-4, 1.423047695105589e-4, 3.3871035558126015e-6),
        "eps": (2.7867895625009e-08, 1.9868935703787622e-08, 4.515242618159344e-06, 4.046144976139705e-05),
        "sigma": (0.00921040366516759,) * 3,
        "lr_fb": 0.0045157498494467095,
        "eps_fb": 7.529093372180766e-07,
        "feedback_wd": 6.169295107849636e-05,
        "batch_size": 128,
        "num_epochs": 90,
    },
    "mnist": {
        "target_stepsize": 0.04385,
        "lr": (0.001694, 0.09782, 0.02479, 0.001937),
        "eps": (6.533e-05, 1.175e-05, 6.843e-05, 2.564e-05),
        "sigma": (4.788e-05, 0.0008712, 0.0002377),  # Table 8's 4th value has no hidden layer
        "lr_fb": 0.0001614,
        "eps_fb": 9.506e-08,
        "feedback_wd": 3.993e-05,
        "batch_size": 143,
        "num_epochs": 40,
    },
}
S_DDTP["fashion_mnist"] = dict(S_DDTP["mnist"])

# p-DDTP (Table 9). K's and σ's 4th values belong to the output layer, which has no feedback.
P_DDTP = {
    "mnist": {
        "target_stepsize": 0.0428,
        "eps": (4.409e-06, 9.007e-07, 2.197e-05, 1.318e-05),
        "eps_fb": 1.197e-08,
        "sigma": (1.342e-05, 0.0002404, 2.927e-05),
        "lr": (0.004434, 0.001448, 0.0006104, 0.001353),
        "lr_fb": 0.0006438,
        "num_fb_iters": (49, 32, 54),
        "feedback_wd": 2.236e-05,
        "batch_size": 138,
        "num_epochs": 40,
    },
    "fashion_mnist": {
        "target_stepsize": 0.01308,
        "eps": (2.376e-08, 4.795e-06, 4.672e-06, 1.663e-07),
        "eps_fb": 2.491e-07,
        "sigma": (0.003812, 0.00224, 0.0005647),
        "lr": (0.0003865, 0.00175, 0.001484, 0.0001489),
        "lr_fb": 0.0001795,
        "num_fb_iters": (48, 42, 52),
        "feedback_wd": 0.000128,
        "batch_size": 141,
        "num_epochs": 40,
    },
    "cifar10": {
        "target_stepsize": 0.09983,
        "eps": (3.814e-05, 1.063e-07, 4.759e-07, 2.439e-06),
        "eps_fb": 2.052e-07,
        "sigma": (0.000307, 3.066e-05, 7.908e-05),
        "lr": (0.0002289, 0.006166, 0.0001575, 5.573e-05),
        "lr_fb": 0.001123,
        "num_fb_iters": (24, 35, 36),
        "feedback_wd": 3.564e-06,
        "batch_size": 190,
        "num_epochs": 90,
    },
}


def ddtp_config(dataset: str, variant: str) -> ml_collections.ConfigDict:
    """s-DDTP (default) or p-DDTP (variant ``p``) on ``dataset``, plus the common variants."""
    variants = config_base.parse_variant(variant)
    if {"s", "p"} <= variants:
        raise config_base.ConfigError("choose one of the variants 's' (s-DDTP) and 'p' (p-DDTP)")
    pddtp = "p" in variants
    table = (P_DDTP if pddtp else S_DDTP)[dataset]
    c = config_base.get_base_config("ddtp", model="lenet")
    c.model.activation = "tanh"  # the paper's DDTP runs (Fig. 2/3 swap in ELU)
    c.data.name = dataset
    c.data.augment = False  # design §8.4: no augmentation
    c.data.batch_size = table["batch_size"]
    c.num_epochs = table["num_epochs"]  # joint epochs; s-DDTP adds its feedback-only epochs
    d = c.ddtp
    for key in ("target_stepsize", "lr", "eps", "sigma", "lr_fb", "eps_fb", "feedback_wd"):
        d[key] = table[key]
    if pddtp:
        d.num_fb_iters = table["num_fb_iters"]
        d.epochs_fb, d.extra_fb_epochs = 0, 0
    else:
        d.num_fb_iters = (1, 1, 1)
        d.epochs_fb, d.extra_fb_epochs = 10, 1
    return config_base.apply_common_variants(c, variants - {"s", "p"})
