"""The interface every training algorithm implements, the train state, and the generic jitted steps.

An algorithm is a class registered by name (``jdtp.algorithms.register``). The
run loop (``jdtp.train``) only ever calls this interface:

* ``default_sections()`` / ``shrink_for_smoke(config)``: its config sections
  (e.g. ``optim`` and ``dtp``) with their defaults, and how ``:smoke`` shrinks them;
  ``variant`` / ``adapt_variant(config)``: the experiment-file variant that selects it
  (``:bp``) and the values that variant sets;
* ``Algorithm(config, net)``: reads and validates *only its own sections*, the one
  time the run reads them (one :class:`jdtp.config_checks.ConfigError` naming the field);
  ``bind(steps_per_epoch)`` then builds what depends on the dataset's size (schedules);
* ``init_state(key)``, ``update(state, x, labels, key, phase=…)``: the state
  and one unjitted train step; :func:`make_train_steps` jits one step per
  phase (s-DDTP's feedback-only epochs are a phase);
* ``total_steps(num_epochs)``, ``phase_of_step(step)``, ``learning_rate(step)``;
* ``scalars(metrics, phase)``: the named scalars it logs;
* ``gmp_update(fwd, fb, x, labels)``: its own forward update and nudge, for
  the angle with the BP gradient (paper Fig. 3/4), or ``None`` (BP);
* ``benchmark_record(batch_size)``: what ``jdtp.benchmark`` records about its step
  (hyperparameters and analytic FLOPs, ``{}`` when not counted).

Keys: the step key of step k is ``fold_in(fold_in(seed_key, 1), k)``; the
preprocessing (augmentation) uses ``fold_in(step_key, 0)`` and the algorithm
``fold_in(step_key, 1)``, for every algorithm.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jdtp import metrics as mt
from jdtp import networks as nets
from jdtp import targets


class TrainState(flax.struct.PyTreeNode):
    """Everything a run needs to continue; keys are derived from (seed, step), not stored.

    ``fb_params`` / ``fb_opt_state`` are empty tuples for algorithms without
    feedback weights (BP).
    """

    step: jax.Array
    fwd_params: Any
    fb_params: Any
    fwd_opt_state: Any
    fb_opt_state: Any


Preprocess = Callable[[dict, jax.Array], tuple[jax.Array, jax.Array]]


def default_preprocess(batch: dict, key) -> tuple[jax.Array, jax.Array]:
    del key
    return batch["image"], batch["label"]


class Algorithm(abc.ABC):
    """Base class of the algorithm plug-ins; see the module docstring for the contract."""

    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]]
    phases: ClassVar[tuple[str, ...]] = ("train",)
    # The experiment-file variant that makes an experiment's config this algorithm's (``:bp``).
    variant: ClassVar[str | None] = None

    def __init__(self, config: ml_collections.ConfigDict, net: nets.Network):
        """Read and validate the algorithm's own sections of ``config`` (nothing else reads them)."""
        del config
        self.net = net
        self._steps_per_epoch: int | None = None

    def bind(self, steps_per_epoch: int) -> Algorithm:
        """Build what depends on the dataset's size (schedules); returns ``self``."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self._steps_per_epoch = int(steps_per_epoch)
        self._bind()
        return self

    def _bind(self) -> None:  # noqa: B027 - optional hook, most algorithms build a schedule here
        """Hook of :meth:`bind` (``self.steps_per_epoch`` is set)."""

    @property
    def steps_per_epoch(self) -> int:
        if self._steps_per_epoch is None:
            raise RuntimeError(f"{self.name}: call bind(steps_per_epoch) before using the schedule")
        return self._steps_per_epoch

    # -- config ---------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def default_sections(cls) -> dict[str, ml_collections.ConfigDict]:
        """The algorithm's config sections with their defaults (keys without one are placeholders)."""

    @classmethod
    def shrink_for_smoke(cls, config: ml_collections.ConfigDict) -> None:
        """Shrink the algorithm's own sections for the ``:smoke`` variant (in place)."""
        del config

    @classmethod
    def adapt_variant(cls, config: ml_collections.ConfigDict) -> None:
        """Values the :attr:`variant` sets after switching an experiment's config to this algorithm."""
        del config

    # -- schedule -------------------------------------------------------------

    def total_steps(self, num_epochs: int) -> int:
        """Steps of a run of ``num_epochs`` epochs."""
        return int(num_epochs) * self.steps_per_epoch

    def forward_epochs(self, step: int) -> float:
        """Epochs (possibly fractional) in which the forward weights were trained, after ``step`` steps."""
        return step / self.steps_per_epoch

    def phase_of_step(self, step: int) -> str:
        """The phase (a key of :func:`make_train_steps`) of global step ``step``."""
        del step
        return self.phases[0]

    @abc.abstractmethod
    def learning_rate(self, step: int) -> float:
        """The forward learning rate used at ``step`` (logged)."""

    # -- state and step -------------------------------------------------------

    @property
    def dtype(self):
        return jnp.float32

    def precision_context(self):
        """Context the whole run executes in (e.g. ``jax.enable_x64`` for a float64 algorithm)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def init_state(self, key: jax.Array) -> TrainState:
        """Parameters and optimizer states at step 0."""

    @abc.abstractmethod
    def update(
        self, state: TrainState, x: jax.Array, labels: jax.Array, key: jax.Array, *, phase: str
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One train step (unjitted). Metrics hold at least ``loss`` and ``accuracy``."""

    # -- logging --------------------------------------------------------------

    def scalars(self, metrics: dict[str, np.ndarray], phase: str) -> dict[str, float]:
        """Host metrics of a step as named scalars (``train/...``, per-layer ``name/block``)."""
        del phase
        return {"train/loss": float(metrics["loss"]), "train/accuracy": float(metrics["accuracy"])}

    @property
    def divergence_hint(self) -> str:
        """What to change when training diverges (the NaN message)."""
        return "lower the learning rates"

    # -- GMP (paper Thm. 4.3, Fig. 3, Fig. 4) ---------------------------------

    def gmp_update(self, fwd_params, fb_params, x: jax.Array, labels: jax.Array):
        """``(update, nudge)``: the algorithm's forward update on a batch and its nudge, or ``None``."""
        del fwd_params, fb_params, x, labels
        return None

    @property
    def has_gmp(self) -> bool:
        return type(self).gmp_update is not Algorithm.gmp_update

    @property
    def gmp_label(self) -> str:
        """How the GMP log line describes the update (e.g. ``DTP update, β=0.005``)."""
        return f"{self.name} update"

    # -- benchmark ------------------------------------------------------------

    def benchmark_record(self, batch_size: int) -> dict[str, Any]:
        """What ``jdtp.benchmark`` records about this step: settings and analytic FLOPs.

        ``flops_analytic`` (matrix-product and convolution FLOPs of one step, counted from the
        blocks' shapes) and any breakdown as further ``flops_analytic_*`` keys; ``{}`` if not counted.
        """
        del batch_size
        return {}


def per_layer(prefix: str, values, names: Sequence[str]) -> dict[str, float]:
    """``{prefix/name: value}`` for a per-layer vector."""
    return {f"{prefix}/{name}": float(v) for name, v in zip(names, np.asarray(values), strict=True)}


def make_train_steps(
    algo: Algorithm, preprocess: Preprocess | None = None, *, donate: bool = True
) -> dict[str, Callable]:
    """Jitted ``(state, batch, key) -> (state, metrics)`` per phase of ``algo``.

    ``preprocess(batch, key) -> (x, labels)`` (augmentation) runs inside the step
    from ``fold_in(key, 0)``; the algorithm gets ``fold_in(key, 1)``.
    """
    preprocess = preprocess or default_preprocess

    def make(phase):
        def step(state, batch, key):
            x, labels = preprocess(batch, jax.random.fold_in(key, 0))
            x = x.astype(algo.dtype)  # float64 algorithms take float32 data
            return algo.update(state, x, labels, jax.random.fold_in(key, 1), phase=phase)

        return jax.jit(step, donate_argnums=(0,) if donate else ())

    return {phase: make(phase) for phase in algo.phases}


def make_gmp_fn(algo: Algorithm):
    """Jitted ``(fwd_params, fb_params, x, labels) -> (dists, angles, norm_ratios)``: update / nudge vs BP gradient.

    Raises:
      ValueError: the algorithm has no update to compare (BP).
    """
    if not algo.has_gmp:
        raise ValueError(f"algorithm {algo.name!r} has no GMP update (it is backprop or has no targets)")
    net = algo.net

    def fn(fwd_params, fb_params, x, labels):
        x = x.astype(algo.dtype)
        update, nudge = algo.gmp_update(fwd_params, fb_params, x, labels)
        bp, _ = targets.bp_grads(net, fwd_params, x, labels)
        return (*mt.gmp_metrics(net, update, bp, nudge), mt.gmp_norm_ratios(net, update, bp, nudge))

    return jax.jit(fn)
