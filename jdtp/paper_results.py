"""The paper's reported test accuracies (Tables 1-3; design §12): the one place they are stated.

Keys are ``(dataset, model, label)`` with the labels the sweeps use (``dtp``, ``bp``,
``s-ddtp``, ``p-ddtp``). Values are ``(mean, std)`` in percent over 5 seeds (ImageNet 32×32:
one seed, top-1, with top-5 in :data:`TOP5`).
"""

from __future__ import annotations

TABLE_1_EPOCHS = {"mnist": 40, "fashion_mnist": 40, "cifar10": 90}

ACCURACY = {
    ("mnist", "lenet", "s-ddtp"): (98.59, 0.16),
    ("mnist", "lenet", "p-ddtp"): (98.58, 0.13),
    ("mnist", "lenet", "dtp"): (98.93, 0.04),
    ("mnist", "lenet", "bp"): (98.92, 0.04),
    ("fashion_mnist", "lenet", "s-ddtp"): (88.86, 0.44),
    ("fashion_mnist", "lenet", "p-ddtp"): (89.42, 0.69),
    ("fashion_mnist", "lenet", "dtp"): (90.91, 0.17),
    ("fashion_mnist", "lenet", "bp"): (91.94, 0.33),
    ("cifar10", "lenet", "s-ddtp"): (76.33, 0.27),
    ("cifar10", "lenet", "p-ddtp"): (72.15, 0.29),
    ("cifar10", "lenet", "dtp"): (85.33, 0.32),
    ("cifar10", "lenet", "bp"): (86.34, 0.35),
    ("cifar10", "simple_vgg", "dtp"): (89.38, 0.20),
    ("cifar10", "simple_vgg", "bp"): (89.07, 0.22),
    ("imagenet32", "simple_vgg", "dtp"): (36.81, None),
    ("imagenet32", "simple_vgg", "bp"): (37.47, None),
}

TOP5 = {
    ("imagenet32", "simple_vgg", "dtp"): 60.54,
    ("imagenet32", "simple_vgg", "bp"): 61.25,
}

EPOCHS = {
    **{k: TABLE_1_EPOCHS[k[0]] for k in ACCURACY if k[1] == "lenet"},
    ("cifar10", "simple_vgg", "dtp"): 90,
    ("cifar10", "simple_vgg", "bp"): 90,
    ("imagenet32", "simple_vgg", "dtp"): 90,
    ("imagenet32", "simple_vgg", "bp"): 90,
}


def lookup(dataset: str, model: str, label: str) -> tuple[float, float | None] | None:
    """``(mean, std)`` of the paper's row, or ``None`` if the paper has no such row."""
    return ACCURACY.get((dataset, model, label))
