"""ResNet-18 (width 16) on Fashion-MNIST padded to 32×32 with L-DRL DTP and the ``jacobian`` G. Ours:
no published ResNet result with DTP exists, and the reference's inverted blocks die under L-DRL
(README, *Architectures and algorithms*).

Command (CPU; 1 epoch):
    python -m jdtp.main --config=configs/resnet18_fmnist.py --workdir=workdirs/resnet18_fmnist
    python -m jdtp.main --config=configs/resnet18_fmnist.py:bp --workdir=workdirs/resnet18_fmnist_bp

Feedback (measured with ``benchmarks/resnet_fmnist.py``): G^n is the transpose of F^n's Jacobian
structure with its own weights (``model.feedback='jacobian'``: F's ReLU derivatives, G's kernels),
trained by L-DRL with the ``'jvp'`` probe (the derivatives of the clean pass, so G is linear in
its input and the L-DRL optimum is exactly ∂F^nᵀ) and Adam: at lr_b 3e-3 in every layer, 200
iterations on one batch take the GMP angles to 12-21° in every stage, where the reference's SGD
learning rates leave 60-92°; in training, G^4 and G^5 (layer_4, fc) get 1e-2 and 3e-2. σ and β are the reference's defaults; K = 4 per layer and step (the
reference's 20-55 are beyond a 2-core CPU). The local loss has no 1/β (paper Eq. 6 as the
reference computes it), so a DTP step is β × lr_f along the BP gradient when G is aligned:
lr_f = 0.05 / β gives DTP the BP baseline's step (SGD lr 0.05, momentum 0.9, wd 1e-4).

Status (README): BP reaches 76.8 % in the epoch; DTP learns for a few hundred steps, then G^4
falls behind F and the run diverges. Not a working recipe yet.
"""

from jdtp import config_base

BP_LR = 0.05  # the VGG/ResNet BP baseline's SGD learning rate
BETA = 0.7  # the reference's default β


def get_config(variant: str = ""):
    c = config_base.get_base_config("dtp", model="resnet18")
    c.model.width = 16
    c.model.feedback = "jacobian"
    c.data.name = "fashion_mnist"
    c.data.pad_to = 32
    c.data.batch_size = 64
    c.dtp.beta = BETA
    c.dtp.noise_scale = (0.4, 0.4, 0.2, 0.2, 0.08)
    c.dtp.num_fb_iters = (4, 4, 4, 4, 4)
    # The top two G track the layers that change fastest: 3e-3 everywhere let G^5's angle reach
    # 74° during training and both runs collapse (README); 1e-2 and 3e-2 there keep them aligned.
    c.dtp.fb_lr = (3e-3, 3e-3, 3e-3, 1e-2, 3e-2)
    c.dtp.fb_optimizer = "adam"
    c.dtp.probe = "jvp"
    c.optim.lr = BP_LR / BETA
    c.num_epochs = 1
    c.evals_per_epoch = 4
    c.gmp_every_steps = 50
    c.checkpoint_every_steps = 100
    bp = {"optim.lr": BP_LR}
    return config_base.apply_common_variants(c, config_base.parse_variant(variant), {"bp": bp})
