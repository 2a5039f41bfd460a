"""The training program: ``train_and_evaluate(config, workdir)`` (conventions §3).

Runs L-DRL DTP or the backprop baseline from an ml-collections config, with
step-indexed data (a resumed run sees exactly the same batches), keys derived
from (seed, step), Orbax checkpoints, metrics in ``metrics.jsonl`` and
TensorBoard, per-epoch evaluation, SIGTERM handling and a ``results.json`` at
the end.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jdtp import (
    checkpointing,
    config_base,
    ddtp,
    drl,
    feedback,
    input_pipeline,
    optim,
    sharding,
    steps,
    vanilla,
)
from jdtp import networks as nets


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or Inf; the message names the step, layer and metric."""


def build_network(config: ml_collections.ConfigDict, info: input_pipeline.DatasetInfo) -> nets.Network:
    """The network of ``config.model`` for the dataset's input shape and number of classes."""
    kwargs: dict[str, Any] = {
        "channels": tuple(config.model.channels),
        "activation": config.model.activation,
        "conv_impl": config.model.conv_impl,
    }
    if config.model.name == "lenet":
        kwargs["hidden"] = int(config.model.hidden)
    return nets.build_network(config.model.name, info.shape, info.num_classes, **kwargs)


def make_hparams(config: ml_collections.ConfigDict) -> steps.DTPHParams:
    d = config.dtp
    return steps.DTPHParams(
        beta=float(d.beta),
        noise_scale=tuple(float(v) for v in d.noise_scale),
        num_fb_iters=tuple(int(v) for v in d.num_fb_iters),
        fb_lr=tuple(float(v) for v in d.fb_lr),
        fb_momentum=float(d.fb_momentum),
        unpool_mode=d.unpool_mode,
        probe=d.probe,
        unroll=int(d.unroll),
        ldrl_closed_form=bool(d.ldrl_closed_form),
    )


def make_ddtp_hparams(config: ml_collections.ConfigDict) -> ddtp.DDTPHParams:
    d = config.ddtp
    return ddtp.DDTPHParams(
        target_stepsize=float(d.target_stepsize),
        lr=tuple(float(v) for v in d.lr),
        eps=tuple(float(v) for v in d.eps),
        num_fb_iters=tuple(int(v) for v in d.num_fb_iters),
        drl=drl.DRLHParams(
            sigma=tuple(float(v) for v in d.sigma),
            lr=float(d.lr_fb),
            eps=float(d.eps_fb),
            b1=float(d.b1_fb),
            b2=float(d.b2_fb),
            weight_decay=float(d.feedback_wd),
            semantics=d.semantics,
        ),
        epochs_fb=int(d.epochs_fb),
        extra_fb_epochs=int(d.extra_fb_epochs),
        normalize_lr=bool(d.normalize_lr),
    )


def make_fwd_tx(config: ml_collections.ConfigDict, steps_per_epoch: int):
    o = config.optim
    schedule = optim.make_schedule(
        float(o.lr),
        steps_per_epoch,
        o.schedule,
        int(o.t_max),
        float(o.eta_min),
        int(o.step_size),
        float(o.gamma),
    )
    return optim.make_fwd_optimizer(schedule, float(o.momentum), float(o.weight_decay)), schedule


class MetricWriter:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard; a no-op except on process 0."""

    def __init__(self, workdir: str, resume_step: int | None, active: bool):
        self.active = active
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if not active:
            return
        if resume_step is not None and os.path.exists(self.path):
            # Drop records from after the checkpoint, which the resumed run will redo.
            with open(self.path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        elif resume_step is None and os.path.exists(self.path):
            os.remove(self.path)
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            logging.warning("tensorboardX not installed: TensorBoard summaries disabled")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))

    def write_hparams(self, config: ml_collections.ConfigDict) -> None:
        if self.active and self._tb is not None:
            self._tb.add_text("config", "```\n" + str(config) + "\n```", 0)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _per_layer(prefix: str, values, names: Sequence[str]) -> dict[str, float]:
    return {f"{prefix}/{name}": float(v) for name, v in zip(names, np.asarray(values))}


def _check_finite(step: int, scalars: dict[str, float], state, net: nets.Network, last_ckpt) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite metric or parameter."""
    bad = [k for k, v in scalars.items() if not np.isfinite(v)]
    where = f"last good checkpoint: step {last_ckpt}" if last_ckpt is not None else "no checkpoint saved yet"
    if bad:
        raise NonFiniteError(
            f"non-finite metric {bad[0]}={scalars[bad[0]]} at step {step} ({where}); "
            "lower the learning rates (config.optim.lr, config.dtp.fb_lr) or config.dtp.noise_scale"
        )
    finite = _params_finite(state.fwd_params, state.fb_params)
    for kind, flags in (("forward", finite[0]), ("feedback", finite[1])):
        for name, ok in zip([b.name for b in net.blocks], flags):
            if not bool(ok):
                raise NonFiniteError(
                    f"non-finite {kind} weights of layer {name} at step {step} ({where}); "
                    "lower the learning rates (config.optim.lr, config.dtp.fb_lr)"
                )


@jax.jit
def _params_finite(fwd_params, fb_params):
    def per_block(params):
        return jnp.stack(
            [jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(p)])) for p in params]
        )

    return per_block(fwd_params), per_block(fb_params)


def evaluate(eval_step, state, ds, config, mesh) -> dict[str, float]:
    """Exact (masked) averages over the whole eval set."""
    totals: dict[str, float] = {}
    batches = input_pipeline.eval_batches(
        ds, int(config.data.eval_batch_size), jax.process_index(), jax.process_count()
    )
    for batch in batches:
        out = eval_step(state.fwd_params, sharding.global_batch(batch, mesh))
        for k, v in jax.device_get(out).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    n = totals["count"]
    return {
        "eval/loss": totals["loss_sum"] / n,
        "eval/accuracy": totals["correct"] / n,
        "eval/top5_accuracy": totals["correct_top5"] / n,
    }


class _SigtermFlag:
    """Turns SIGTERM into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping after this step")
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    callbacks: Sequence[Callable[[int, Any], None]] = (),
) -> dict[str, Any]:
    """Train and evaluate one run; resumes from ``workdir`` if it holds a checkpoint.

    Args:
      config: the run's config (see ``jdtp.config_base``).
      workdir: where checkpoints, ``metrics.jsonl``, TensorBoard files and
        ``results.json`` go.
      callbacks: functions ``(step, state)`` called on the host after each step.

    Returns:
      The contents of ``results.json``.

    Raises:
      config_base.ConfigError: a config value is invalid (before anything is written).
      input_pipeline.DatasetNotFoundError: the dataset is absent and cannot be prepared.
      NonFiniteError: training diverged; the last good checkpoint is kept.
    """
    x64 = config.algorithm == "ddtp" and bool(config.ddtp.float64)
    with jax.default_matmul_precision(config.matmul_precision), jax.enable_x64(x64):
        return _train_and_evaluate(config, workdir, callbacks)


def _train_and_evaluate(config, workdir, callbacks):
    t_start = time.time()
    info = input_pipeline.get_info(config.data.name, config.data)
    net = build_network(config, info)
    config_base.validate_config(config, net.num_trainable_fb, net.name)
    mesh = sharding.make_mesh(int(config.mesh_devices))
    sharding.check_batch_divisible(int(config.data.batch_size), mesh)
    sharding.check_batch_divisible(int(config.data.eval_batch_size), mesh, "config.data.eval_batch_size")
    ds = input_pipeline.load_dataset(config.data)

    batch_size = int(config.data.batch_size)
    steps_per_epoch = input_pipeline.steps_per_epoch(ds.num_train, batch_size)
    is_ddtp = config.algorithm == "ddtp"
    ddtp_hp = make_ddtp_hparams(config) if is_ddtp else None
    num_steps = int(config.num_train_steps)
    if num_steps == -1:
        epochs = int(config.num_epochs)
        if is_ddtp:  # num_epochs counts joint epochs; feedback-only epochs come on top
            epochs = ddtp.total_epochs(epochs, ddtp_hp.epochs_fb, ddtp_hp.extra_fb_epochs)
        num_steps = epochs * steps_per_epoch
    fwd_tx, schedule = make_fwd_tx(config, steps_per_epoch)
    is_dtp = config.algorithm not in ("bp", "ddtp")  # trains layer-wise feedback blocks G^n
    hp = make_hparams(config)
    fb_txs = feedback.make_fb_optimizers(hp.fb_lr, hp.fb_momentum) if is_dtp else ()

    preprocess = input_pipeline.make_preprocess(info, bool(config.data.augment))
    ddtp_steps = None
    if is_ddtp:
        ddtp_steps = ddtp.make_train_steps(net, ddtp_hp, preprocess)
        train_step = None
        lr0 = ddtp_hp.lr[0] / (ddtp_hp.target_stepsize if ddtp_hp.normalize_lr else 1.0)

        def schedule(step):  # DDTP has no schedule (spec §8.4); log the first block's lr
            del step
            return lr0

    elif config.algorithm == "dtp":
        train_step = steps.make_dtp_train_step(net, fwd_tx, fb_txs, hp, preprocess)
    elif config.algorithm in vanilla.ALGORITHMS:
        train_step = vanilla.make_train_step(net, fwd_tx, fb_txs, hp, config.algorithm, preprocess)
    else:
        train_step = steps.make_bp_train_step(net, fwd_tx, preprocess)
    eval_step = steps.make_eval_step(net, preprocess=input_pipeline.make_eval_preprocess(info))
    if is_ddtp:
        gmp_fn = ddtp.make_gmp_fn(net, ddtp_hp.target_stepsize)
    else:
        gmp_fn = steps.make_gmp_fn(net, float(config.gmp_beta), hp.unpool_mode)
    jit_preprocess = jax.jit(preprocess)

    root_key = jax.random.key(int(config.seed))
    init_key, data_seed = jax.random.fold_in(root_key, 0), int(config.seed)
    if is_ddtp:
        dtype = jnp.float64 if config.ddtp.float64 else jnp.float32
        state = ddtp.create_train_state(init_key, net, ddtp_hp, dtype)
    else:
        state = steps.create_train_state(init_key, net, fwd_tx, fb_txs)
    state = sharding.replicate(state, mesh)

    os.makedirs(workdir, exist_ok=True)
    manager = checkpointing.make_manager(workdir, int(config.max_checkpoints_to_keep))
    state, restored = checkpointing.restore_or_init(manager, state)
    start_step = int(state.step)
    is_main = jax.process_index() == 0
    writer = MetricWriter(workdir, restored, is_main)
    if restored is None:
        writer.write_hparams(config)
        if is_main:
            with open(os.path.join(workdir, "config.json"), "w") as f:
                json.dump(config.to_dict(), f, indent=2, default=str)
    names = [b.name for b in net.blocks]
    fb_names = names[:-1] if is_ddtp else names[1:]  # DDTP: Q_n named by the block producing s^n
    logging.info(
        "%s on %s (%s): %d train / %d eval examples, batch %d, %d steps/epoch, steps %d -> %d, %d device(s)",
        config.algorithm.upper(),
        info.name,
        net.name,
        ds.num_train,
        ds.num_eval,
        batch_size,
        steps_per_epoch,
        start_step,
        num_steps,
        mesh.devices.size,
    )

    last_ckpt = restored
    eval_metrics: dict[str, float] = {}
    preempted = False
    t_log, step_at_log = time.time(), start_step
    train_time = 0.0
    with _SigtermFlag() as sigterm:
        step = start_step
        try:
            while step < num_steps:
                t0 = time.time()
                local = input_pipeline.get_train_batch(
                    ds, step, batch_size, data_seed, jax.process_index(), jax.process_count()
                )
                batch = sharding.global_batch(local, mesh)
                step_key = jax.random.fold_in(jax.random.fold_in(root_key, 1), step)
                if is_ddtp:
                    phase = ddtp.phase_of_epoch(
                        step // steps_per_epoch, ddtp_hp.epochs_fb, ddtp_hp.extra_fb_epochs
                    )
                    state, metrics = ddtp_steps[phase](state, batch, step_key)
                else:
                    state, metrics = train_step(state, batch, step_key)
                step += 1
                epoch_float = step / steps_per_epoch

                if step % int(config.log_every_steps) == 0 or step == num_steps:
                    m = jax.device_get(metrics)
                    scalars = {
                        "train/loss": m["loss"],
                        "train/accuracy": m["accuracy"],
                        "train/lr": float(schedule(step - 1)),
                        "epoch": epoch_float,
                    }
                    if is_ddtp:
                        scalars["train/local_loss"] = m["local_loss"]
                        scalars["train/feedback_only"] = float(phase == "feedback")
                        scalars.update(_per_layer("train/fb_loss_first", m["fb_loss_first"], fb_names))
                        scalars.update(_per_layer("train/fb_loss_last", m["fb_loss_last"], fb_names))
                    if is_dtp:
                        scalars["train/local_loss"] = m["local_loss"]
                        scalars.update(_per_layer("train/fb_loss_first", m["fb_loss_first"], fb_names))
                        scalars.update(_per_layer("train/fb_loss_last", m["fb_loss_last"], fb_names))
                        scalars.update(_per_layer("jmc_angle", m["jmc_angle"], fb_names))
                        scalars.update(_per_layer("jmc_dist", m["jmc_dist"], fb_names))
                    _check_finite(step, scalars, state, net, last_ckpt)
                    elapsed = time.time() - t_log
                    rate = (step - step_at_log) * batch_size / max(elapsed, 1e-9)
                    eta = (num_steps - step) * elapsed / max(step - step_at_log, 1)
                    scalars["perf/images_per_sec"] = rate
                    writer.write(step, scalars)
                    logging.info(
                        "step %d/%d (epoch %.2f) loss %.4f acc %.3f | %.0f img/s | ETA %s",
                        step,
                        num_steps,
                        epoch_float,
                        scalars["train/loss"],
                        scalars["train/accuracy"],
                        rate,
                        _format_eta(eta),
                    )
                    t_log, step_at_log = time.time(), step

                if config.gmp_every_steps and step % int(config.gmp_every_steps) == 0:
                    x, labels = jit_preprocess(batch, jax.random.fold_in(step_key, 0))
                    _, angles = gmp_fn(state.fwd_params, state.fb_params, x, labels)
                    gmp = {"epoch": epoch_float, **_per_layer("gmp_angle", angles, names)}
                    writer.write(step, gmp)
                    nudge = f"η={ddtp_hp.target_stepsize:g}" if is_ddtp else f"β={config.gmp_beta:g}"
                    logging.info(
                        "GMP angles (%s update vs BP gradient, %s): %s", config.algorithm.upper(), nudge, gmp
                    )

                end_of_epoch = step % steps_per_epoch == 0
                epoch = step // steps_per_epoch
                if (end_of_epoch and epoch % int(config.eval_every_epochs) == 0) or step == num_steps:
                    eval_metrics = evaluate(eval_step, state, ds, config, mesh)
                    writer.write(step, {"epoch": epoch_float, **eval_metrics})
                    logging.info("eval at step %d (epoch %.2f): %s", step, epoch_float, eval_metrics)

                for cb in callbacks:
                    cb(step, state)
                train_time += time.time() - t0

                if step % int(config.checkpoint_every_steps) == 0 or step == num_steps or sigterm.raised:
                    _check_finite(step, {}, state, net, last_ckpt)
                    checkpointing.save(manager, step, state, wait=sigterm.raised)
                    last_ckpt = step
                if sigterm.raised:
                    preempted = True
                    logging.warning(
                        "Stopped by SIGTERM at step %d; rerun with the same workdir to resume", step
                    )
                    break
        finally:
            checkpointing.wait_and_close(manager)
            writer.close()

    results = {
        "algorithm": config.algorithm,
        "dataset": info.name,
        "model": net.name,
        "eval_set": ds.eval_name,
        "final_test_accuracy": eval_metrics.get("eval/accuracy"),
        "final_test_top5_accuracy": eval_metrics.get("eval/top5_accuracy"),
        "final_test_loss": eval_metrics.get("eval/loss"),
        "steps": int(step),
        "num_train_steps": num_steps,
        "epochs": step / steps_per_epoch,
        "preempted": preempted,
        "wall_time_s": time.time() - t_start,
        "train_loop_time_s": train_time,
        "devices": int(mesh.devices.size),
        "processes": jax.process_count(),
        "config": config.to_dict(),
    }
    if jax.process_index() == 0 and not preempted:
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jdtp_train_end")
    return results
