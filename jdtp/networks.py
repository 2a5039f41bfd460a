"""Networks: a sequence of blocks (``jdtp.blocks``), their initialisation, and the architectures.

A :class:`Network` is a static tuple of blocks; ``blocks[n]`` maps s^n to
s^{n+1}. Parameters are tuples of per-block dicts, built by :func:`init_params`.
:func:`lenet` and :func:`simple_vgg` build the paper's networks; ``jdtp.architectures`` lists every
architecture by name.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jdtp import blocks as blk
from jdtp import conv as convs
from jdtp import pooling

Params = blk.Params


@dataclasses.dataclass(frozen=True)
class Network:
    """A sequence of (F^n, G^n) pairs; ``blocks[n]`` maps s^n to s^{n+1}."""

    name: str
    blocks: tuple[blk.Block, ...]

    def __post_init__(self):
        for b in self.blocks:
            if not isinstance(b, blk.Block):
                raise TypeError(
                    f"{self.name}: {b!r} is not a jdtp.blocks.Block; every block must implement the "
                    "block protocol (forward, feedback, param_specs, jmc_pairs, ...)"
                )
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: block names must be unique, got {names}")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_trainable_fb(self) -> int:
        """Trainable feedback blocks G^1..G^{N-1}; G^0 is never trained (design §0.2)."""
        return len(self.blocks) - 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.blocks[0].in_shape

    @property
    def num_classes(self) -> int:
        return math.prod(self.blocks[-1].out_shape)

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)


# ---------------------------------------------------------------------------
# Initialisation: U(±1/sqrt(fan_in)) for weights and biases (design §3.5).


def init_params(
    key: jax.Array, net: Network, dtype=jnp.float32
) -> tuple[tuple[Params, ...], tuple[Params, ...]]:
    """PyTorch-default init of every (F^n, G^n): kaiming_uniform(a=√5) ≡ U(±1/√fan_in).

    Weights and biases alike are U(−1/√fan_in, 1/√fan_in), with the fan-ins of
    each block's :meth:`~jdtp.blocks.Block.param_specs` (design §3.5; not Flax's
    defaults). All values come from one uniform draw of ``key`` that is cut
    into the parameters on the host, in block order, F's parameters before G's:
    one random kernel to compile instead of one per parameter shape, which
    keeps start-up fast on CPU.

    Returns:
      ``(fwd_params, fb_params)``, tuples of length N. ``fb_params[0]`` (G^0)
      is built for parity with the reference but never trained or used.
    """
    specs = [b.param_specs() for b in net.blocks]
    total = sum(math.prod(s.shape) for f, g in specs for s in (*f, *g))
    u = np.asarray(jax.random.uniform(key, (total,), jnp.float32, -1.0, 1.0), np.float64)
    offset = 0

    def take(group):
        nonlocal offset
        out = {}
        for spec in group:
            size = math.prod(spec.shape)
            values = u[offset : offset + size].reshape(spec.shape) / math.sqrt(spec.fan_in)
            out[spec.name] = jnp.asarray(values, dtype)
            offset += size
        return out

    fwd, fb = [], []
    for f, g in specs:
        fwd.append(take(f))
        fb.append(take(g))
    return tuple(fwd), tuple(fb)


def init_block(key: jax.Array, block: blk.Block, dtype=jnp.float32) -> tuple[Params, Params]:
    """Initialise one (F, G) pair as :func:`init_params` does."""
    (f,), (g,) = init_params(key, Network("block", (block,)), dtype)
    return f, g


def symmetric_fb_params(net: Network, fwd_params) -> tuple[Params, ...]:
    """Feedback parameters with G^n's weights equal to F^n's adjoint (copied, not aliased).

    G's biases are zero, as in the reference's ``init_symetric_weights``; they
    cancel in every DTP difference anyway (design §1.2, §3.5).
    """
    return tuple(b.symmetric_feedback(f) for b, f in zip(net.blocks, fwd_params, strict=True))


# ---------------------------------------------------------------------------
# Architectures.


def _conv_stack(input_shape, channels, kernel_size, padding, pool, activation, use_bias, conv_impl):
    """``conv_i`` blocks with ``channels[i]`` features each; returns ``(blocks, output shape)``."""
    blocks: list[blk.Block] = []
    shape = tuple(input_shape)
    for i, c in enumerate(channels):
        b = blk.ConvBlock(
            name=f"conv_{i}",
            in_shape=shape,
            features=c,
            kernel_size=kernel_size,
            padding=padding,
            pool=pool,
            activation=activation,
            use_bias=use_bias,
            conv_impl=convs.resolve_conv_impl(conv_impl),
        )
        blocks.append(b)
        shape = b.out_shape
    return blocks, shape


def lenet(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    channels: tuple[int, int] = (32, 64),
    hidden: int = 512,
    activation: str = "elu",
    pool: bool = True,
    use_bias: bool = True,
    conv_impl: str = "auto",
) -> Network:
    """LeNet of the paper (design §3.2): 2 × [conv5×5 p2 → act → maxpool 3×3 s2 p1], fc 512, fc.

    fc1's input size is inferred from ``input_shape`` (4096 for 32×32, 3136 for
    28×28), as the paper's runs did with LazyLinear (design §10.8).
    """
    pooled = pooling.Pool(3, 2, 1) if pool else None
    blocks, shape = _conv_stack(input_shape, channels, 5, 2, pooled, activation, use_bias, conv_impl)
    fc1 = blk.DenseBlock("fc1", shape, hidden, activation, use_bias)
    fc2 = blk.DenseBlock("fc2", fc1.out_shape, num_classes, "identity", use_bias)
    return Network("lenet", (*blocks, fc1, fc2))


def simple_vgg(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    channels: tuple[int, ...] = (128, 128, 256, 256, 512),
    activation: str = "elu",
    use_bias: bool = True,
    conv_impl: str = "auto",
) -> Network:
    """SimpleVGG of the paper (design §3.3): 5 × [conv3×3 p1 → act → maxpool 2×2 s2], fc."""
    blocks, shape = _conv_stack(
        input_shape, channels, 3, 1, pooling.Pool(2, 2, 0), activation, use_bias, conv_impl
    )
    blocks.append(blk.DenseBlock("fc", shape, num_classes, "identity", use_bias))
    return Network("simple_vgg", tuple(blocks))
