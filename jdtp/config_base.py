"""Base config: every field a run can set, with defaults (conventions §3.5).

Experiment files in ``configs/`` start from :func:`get_base_config` and change
what they need; the config is locked, so every overridable key must exist here.
Per-layer values are tuples (in forward order over G^1 … G^{N−1}) so that they
can be overridden from the command line, e.g. ``--config.dtp.beta=0.5`` or
``--config.dtp.num_fb_iters='(10,10,10)'``.
"""

from __future__ import annotations

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.algorithm = "dtp"  # 'dtp' (L-DRL DTP) or 'bp' (backprop baseline)

    c.model = ml_collections.ConfigDict()
    c.model.name = "lenet"  # 'lenet' or 'simple_vgg'
    c.model.channels = (32, 64)
    c.model.hidden = 512  # LeNet's fc1 width (ignored by simple_vgg)
    c.model.activation = "elu"

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"  # mnist, fashion_mnist, cifar10, imagenet32, digits, synthetic
    c.data.data_dir = ""  # TFDS data_dir; '' uses $TFDS_DATA_DIR, then ~/tensorflow_datasets
    c.data.batch_size = 128  # global batch, over all devices and hosts
    c.data.eval_batch_size = 500
    c.data.augment = True  # flip + random crop 32 (pad 4, edge), spec §5
    c.data.validation_split = 0.0  # 0 = the paper's protocol: train on all, test on the test set
    c.data.download = True  # prepare a missing TFDS dataset (needs network and tensorflow)
    c.data.synthetic_shape = (32, 32, 3)  # only for data.name='synthetic'
    c.data.synthetic_num_classes = 10
    c.data.synthetic_train_size = 512
    c.data.synthetic_eval_size = 256

    c.dtp = ml_collections.ConfigDict()
    c.dtp.beta = 0.7
    c.dtp.noise_scale = (0.41640228838517584, 0.3826261146623929, 0.13953820693586017)
    c.dtp.num_fb_iters = (41, 51, 24)
    c.dtp.fb_lr = (0.0007188427494432325, 0.00012510321884615596, 0.03541466958291287)
    c.dtp.fb_momentum = 0.9
    c.dtp.unpool_mode = "set"  # 'set' (reference) or 'add' (exact transpose of max-pool)
    c.dtp.probe = "difference"  # 'difference' (reference) or 'jvp' (small-noise limit)
    c.dtp.unroll = 1  # lax.scan unroll of the K feedback iterations

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 0.05
    c.optim.momentum = 0.9
    c.optim.weight_decay = 1e-4  # coupled (added to the gradient before momentum)
    c.optim.schedule = "cosine"  # 'cosine' (T_max, eta_min per epoch), 'step' or 'constant'
    c.optim.t_max = 85
    c.optim.eta_min = 1e-5
    c.optim.step_size = 30
    c.optim.gamma = 0.1

    c.num_epochs = 90
    c.num_train_steps = -1  # -1: num_epochs × steps per epoch
    c.log_every_steps = 50
    c.gmp_every_steps = 500  # angle(DTP update, BP gradient) per layer; 0 disables
    c.gmp_beta = 0.005  # β used for that angle (paper Fig. 4)
    c.eval_every_epochs = 1
    c.checkpoint_every_steps = 1000
    c.max_checkpoints_to_keep = 2
    c.matmul_precision = "highest"  # recorded in the run's hyperparameters
    c.dtype = "float32"
    return c
