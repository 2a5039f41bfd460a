"""The training program: ``train_and_evaluate(config, workdir)`` (design §13).

Runs any registered algorithm (``jdtp.algorithms``) from an ml-collections config, with
step-indexed data (a resumed run sees exactly the same batches), keys derived
from (seed, step), Orbax checkpoints, metrics in ``metrics.jsonl`` and
TensorBoard, per-epoch evaluation, SIGTERM handling and a ``results.json`` at
the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jdtp import (
    algorithms,
    architectures,
    augmentation,
    batching,
    checkpointing,
    config_base,
    datasets,
    environment,
    evaluation,
    preemption,
    run_files,
    run_plots,
    sharding,
)
from jdtp import networks as nets


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or Inf, or a loss above ``config.max_train_loss``; the message names
    the step, layer and metric."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a checked config defines, built once before anything is loaded or written.

    Attributes:
      info: the dataset's description (shape and classes after ``data.pad_to``).
      algo: the algorithm on the network of ``config.model`` (not yet bound to the dataset's size).
      defaults: every key of the config's algorithm and model at its default (for keys newer
        than a stored run's config).
    """

    info: datasets.DatasetInfo
    algo: algorithms.Algorithm
    defaults: dict


def setup(config: ml_collections.ConfigDict) -> Setup:
    """Read, complete and check ``config``, once: the keys every run has, the algorithm's sections
    (present and only those), the model against the dataset, the algorithm's own values.

    Raises:
      config_base.ConfigError: the first invalid value, named with its fix.
    """
    config_base.validate_common(config)
    info = datasets.get_info(config.data.name, config.data)
    net = architectures.build_from_config(config.model, info.shape, info.num_classes)
    algo = algorithms.create(config, net)  # its sections: present, only those, valid
    defaults = config_base.get_base_config(config.algorithm, model=config.model.name).to_dict()
    return Setup(info, algo, defaults)


class MetricWriter:
    """Writes scalars to ``metrics.jsonl`` and TensorBoard; a no-op except on process 0."""

    def __init__(self, workdir: str, resume_step: int | None, active: bool):
        self.active = active
        self.path = os.path.join(workdir, run_files.METRICS)
        self._tb = None
        if not active:
            return
        if resume_step is not None and os.path.exists(self.path):
            # Drop records from after the checkpoint, which the resumed run will redo.
            run_files.truncate_metrics(self.path, resume_step)
        elif resume_step is None and os.path.exists(self.path):
            # A restart from scratch (no usable checkpoint): keep the old log, never delete it.
            kept = self.path.replace(".jsonl", time.strftime(".%Y%m%d-%H%M%S.jsonl"))
            try:
                os.replace(self.path, kept)
            except OSError as e:
                raise run_files.write_failed(kept, e) from e
            logging.warning("Starting over: the earlier %s is kept as %s", run_files.METRICS, kept)
        try:
            from tensorboardX import SummaryWriter

            # Events after the restored step are purged, so a resumed run logs each step once.
            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            logging.warning("tensorboardX not installed: TensorBoard summaries disabled")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        run_files.append_line(self.path, json.dumps(record))
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))

    def write_hparams(self, config: ml_collections.ConfigDict) -> None:
        if self.active and self._tb is not None:
            self._tb.add_text("config", "```\n" + str(config) + "\n```", 0)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _check_finite(
    step: int,
    scalars: dict[str, float],
    state,
    net: nets.Network,
    ckpts: tuple,
    hint: str,
    max_train_loss: float = 0.0,
) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite metric or parameter.

    ``ckpts`` is ``(restored_step, last_saved_step, restored_verified)``: the message names the
    checkpoint the run started from (and whether its checksum was compared) and the newest one it
    saved (both finite when saved). A ``train/loss`` above ``max_train_loss`` (when > 0) counts as
    diverged too.
    """
    bad = [k for k, v in scalars.items() if not np.isfinite(v)]
    restored, saved, verified = ckpts
    start = (
        "started from scratch"
        if restored is None
        else f"resumed from checkpoint step {restored}, "
        + ("checksum verified" if verified else "unverified: no checksum to compare")
    )
    newest = "no checkpoint saved since" if saved in (None, restored) else f"newest checkpoint: step {saved}"
    where = f"this run {start}; {newest}"
    if bad:
        raise NonFiniteError(f"non-finite metric {bad[0]}={scalars[bad[0]]} at step {step} ({where}); {hint}")
    loss = scalars.get("train/loss")
    if max_train_loss and loss is not None and loss > max_train_loss:
        raise NonFiniteError(
            f"train/loss={loss:.4g} at step {step} is above config.max_train_loss={max_train_loss:g}: "
            f"training diverged ({where}); {hint} (if such a loss is expected, raise "
            "config.max_train_loss; 0 disables the check)"
        )
    finite = _params_finite(state.fwd_params, state.fb_params)
    for kind, flags in (("forward", finite[0]), ("feedback", finite[1])):
        for name, ok in zip(net.block_names, flags, strict=False):  # BP has no feedback blocks
            if not bool(ok):
                raise NonFiniteError(
                    f"non-finite {kind} weights of layer {name} at step {step} ({where}); {hint}"
                )


@jax.jit
def _params_finite(fwd_params, fb_params):
    def per_block(params):
        flags = [jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(p)])) for p in params]
        return jnp.stack(flags) if flags else jnp.zeros((0,), bool)

    return per_block(fwd_params), per_block(fb_params)


def evaluate(eval_step, state, ds, config, mesh) -> dict[str, float]:
    """Exact (masked) averages over the whole eval set."""
    batches = batching.eval_batches(
        ds, int(config.data.eval_batch_size), jax.process_index(), jax.process_count()
    )
    return evaluation.evaluate(eval_step, state.fwd_params, (sharding.global_batch(b, mesh) for b in batches))


def _format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    callbacks: Sequence[Callable[[int, Any], None]] = (),
) -> dict[str, Any]:
    """Train and evaluate one run; resumes from ``workdir`` if it holds a checkpoint.

    Args:
      config: the run's config (see ``jdtp.config_base`` and the algorithm's sections).
      workdir: where checkpoints, ``metrics.jsonl``, TensorBoard files and
        ``results.json`` go.
      callbacks: functions ``(step, state)`` called on the host after each step.

    Returns:
      The contents of ``results.json``.

    Raises:
      config_base.ConfigError: a config value is invalid (before anything is written).
      datasets.DatasetNotFoundError: the dataset is absent and cannot be prepared.
      NonFiniteError: training diverged; the last good checkpoint is kept.
    """
    t_start = time.time()
    run = setup(config)  # before any data is loaded or anything is written
    logging.info(
        "JAX %s, process %d/%d, devices: %s",
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.devices(),
    )
    logging.info("Config:\n%s", config)
    lock = run_files.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        stored = _check_stored_config(config, workdir, run.defaults)
        done = run_files.read_results(workdir)
        if done is not None and stored is not None:
            _, harmless = run_files.config_differences(stored, config.to_dict(), run.defaults)
            if not {"num_epochs", "num_train_steps"} & set(harmless):
                logging.info(
                    "%s already holds a complete run (%d steps, final %s accuracy %.4f): nothing to do",
                    workdir,
                    done["steps"],
                    done["eval_set"],
                    done["final_test_accuracy"],
                )
                return {**done, "already_complete": True}
        with jax.default_matmul_precision(config.matmul_precision):
            ds = batching.load_dataset(config.data)
            algo = run.algo.bind(batching.steps_per_epoch(ds.num_train, int(config.data.batch_size)))
            with algo.precision_context():
                return _train_and_evaluate(config, workdir, callbacks, algo, ds, run.info, t_start)


def _check_stored_config(config: ml_collections.ConfigDict, workdir: str, defaults: dict) -> dict | None:
    """Compare with the config the run started with; a defining change stops the run.

    The stored config comes from ``config.json``, or, when that is missing or unreadable, from
    the newest checkpoint record or result that holds it (``config.json`` is then rebuilt, an
    unreadable one kept aside): a damaged ``config.json`` never turns the check off.

    Returns:
      The stored config (``None`` for a new run).

    Raises:
      config_base.ConfigError: keys that define the run (model, algorithm, hyperparameters, data,
        seed) differ and ``config.allow_config_change`` is False; or the workdir holds a run whose
        config is nowhere to be found.
    """
    path = os.path.join(workdir, run_files.CONFIG)
    records, _ = checkpointing.read_records(workdir)
    stored, source = run_files.recover_config(workdir, records)
    is_main = jax.process_index() == 0
    if stored is None:
        if _holds_a_run(workdir) and not config.allow_config_change:
            state = "unreadable" if os.path.exists(path) else "missing"
            raise config_base.ConfigError(
                f"{path} is {state} and no checkpoint record or result in {workdir} holds the run's config, so "
                "a change of config cannot be checked; restore config.json, or pass "
                "--config.allow_config_change=True to continue this run with this config"
            )
        return None
    if source != run_files.CONFIG and is_main:
        kept = run_files.keep_unreadable(path)
        run_files.write_json_atomic(path, stored)
        logging.warning(
            "%s was %s: rebuilt from %s%s",
            path,
            "unreadable" if kept else "missing",
            source,
            f" (the unreadable file is kept as {kept})" if kept else "",
        )
    defining, harmless = run_files.config_differences(stored, config.to_dict(), defaults)
    if defining and not config.allow_config_change:
        flat_old, flat_new = run_files.flatten(stored), run_files.flatten(config.to_dict())
        shown = ", ".join(
            f"{k}: {flat_old.get(k, '<absent>')} -> {flat_new.get(k, '<absent>')}" for k in defining[:6]
        )
        more = f" (+{len(defining) - 6} more)" if len(defining) > 6 else ""
        raise config_base.ConfigError(
            f"{workdir} holds a run with another config ({shown}{more}); use a new --workdir, or pass "
            "--config.allow_config_change=True to continue this run with the new values"
        )
    if defining or harmless:
        logging.warning("Config changes against %s: %s", run_files.CONFIG, ", ".join(defining + harmless))
    return stored


def _holds_a_run(workdir: str) -> bool:
    """Whether ``workdir`` holds checkpoints or results of a run (whose config must be checked)."""
    ckpt = os.path.join(workdir, "checkpoints")
    has_steps = os.path.isdir(ckpt) and any(name.isdigit() for name in os.listdir(ckpt))
    names = os.listdir(workdir) if os.path.isdir(workdir) else []
    return has_steps or any(n.startswith("results") and n.endswith(".json") for n in names)


def _train_and_evaluate(config, workdir, callbacks, algo, ds, info, t_start):
    net = algo.net
    mesh = sharding.make_mesh(int(config.mesh_devices))
    sharding.check_batch_divisible(int(config.data.batch_size), mesh)
    sharding.check_batch_divisible(int(config.data.eval_batch_size), mesh, "config.data.eval_batch_size")

    batch_size = int(config.data.batch_size)
    steps_per_epoch = algo.steps_per_epoch
    num_steps = int(config.num_train_steps)
    if num_steps == -1:
        num_steps = algo.total_steps(int(config.num_epochs))

    preprocess = augmentation.make_preprocess(info, bool(config.data.augment))
    train_steps = algorithms.make_train_steps(algo, preprocess)
    eval_step = evaluation.make_eval_step(net, preprocess=augmentation.make_eval_preprocess(info))
    gmp_fn = algorithms.make_gmp_fn(algo) if algo.has_gmp and config.gmp_every_steps else None
    jit_preprocess = jax.jit(preprocess)

    root_key = jax.random.key(int(config.seed))
    init_key, data_seed = jax.random.fold_in(root_key, 0), int(config.seed)
    state = sharding.replicate(algo.init_state(init_key), mesh)

    os.makedirs(workdir, exist_ok=True)
    manager = checkpointing.make_manager(workdir, int(config.max_checkpoints_to_keep))
    writer = None
    failed = True
    try:
        manager, state, restored = checkpointing.restore_latest_good(
            manager, state, int(config.max_checkpoints_to_keep)
        )
        start_step = int(state.step)
        is_main = jax.process_index() == 0
        if is_main and 0 < start_step < num_steps:
            # Extending a finished run: its result no longer describes the workdir, so it is set
            # aside now; were it left until the end, a segment that fails would leave it looking
            # complete (jdtp.sweep would skip the run at the earlier budget).
            _set_aside_earlier_results(workdir, start_step)
        verified = checkpointing.is_verified(workdir, restored)
        writer = MetricWriter(workdir, restored, is_main)
        if restored is None:
            writer.write_hparams(config)
        if is_main and not os.path.exists(os.path.join(workdir, run_files.CONFIG)):
            run_files.write_json_atomic(os.path.join(workdir, run_files.CONFIG), config.to_dict())
        wall_before = run_files.cumulative_wall_time(workdir, restored)
        names = net.block_names
        logging.info(
            "%s on %s (%s): %d train / %d eval examples, batch %d, %d steps/epoch, steps %d -> %d, %d device(s)",
            algo.name.upper(),
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
        step_seconds: list[float] = []  # recent step times, for the wait a stop signal announces
        logging.info("Compiling the train step (the first step takes longer)...")
        with preemption.Preemption() as stopper:
            step = start_step
            while step < num_steps:
                t0 = time.time()
                stopper.note_step(
                    step, sorted(step_seconds)[len(step_seconds) // 2] if step_seconds else None, last_ckpt
                )
                local = batching.get_train_batch(
                    ds, step, batch_size, data_seed, jax.process_index(), jax.process_count()
                )
                batch = sharding.global_batch(local, mesh)
                step_key = jax.random.fold_in(jax.random.fold_in(root_key, 1), step)
                phase = algo.phase_of_step(step)
                state, metrics = train_steps[phase](state, batch, step_key)
                step += 1
                epoch_float = step / steps_per_epoch

                if step % int(config.log_every_steps) == 0 or step == num_steps:
                    scalars = algo.scalars(jax.device_get(metrics), phase)
                    scalars["train/lr"] = algo.learning_rate(step - 1)
                    scalars["epoch"] = epoch_float
                    _check_finite(
                        step,
                        scalars,
                        state,
                        net,
                        (restored, last_ckpt, verified),
                        algo.divergence_hint,
                        float(config.max_train_loss),
                    )
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

                if gmp_fn is not None and step % int(config.gmp_every_steps) == 0:
                    x, labels = jit_preprocess(batch, jax.random.fold_in(step_key, 0))
                    _, angles, ratios = gmp_fn(state.fwd_params, state.fb_params, x, labels)
                    gmp = {
                        "epoch": epoch_float,
                        "forward_epoch": algo.forward_epochs(step),
                        **_per_layer("gmp_angle", angles, names),
                        **_per_layer("gmp_norm_ratio", ratios, names),
                    }
                    writer.write(step, gmp)
                    logging.info("GMP angles (%s): %s", algo.gmp_label, gmp)
                    # A NaN angle means the update's or the gradient's norm overflowed: the weights have
                    # diverged while the loss may still be finite (seen: 1e26). Stop before saving them.
                    angles_only = {k: v for k, v in gmp.items() if k.startswith("gmp_angle/")}
                    _check_finite(
                        step, angles_only, state, net, (restored, last_ckpt, verified), algo.divergence_hint
                    )

                end_of_epoch = step % steps_per_epoch == 0
                epoch = step // steps_per_epoch
                every = int(config.eval_every_steps)
                within = max(1, steps_per_epoch // int(config.evals_per_epoch))
                if (
                    (end_of_epoch and epoch % int(config.eval_every_epochs) == 0)
                    or (every and step % every == 0)
                    or (config.evals_per_epoch > 1 and (step % steps_per_epoch) % within == 0)
                    or step == num_steps
                ):
                    eval_metrics = evaluate(eval_step, state, ds, config, mesh)
                    progress = {"epoch": epoch_float, "forward_epoch": algo.forward_epochs(step)}
                    writer.write(step, {**progress, **eval_metrics})
                    logging.info("eval at step %d (epoch %.2f): %s", step, epoch_float, eval_metrics)

                for cb in callbacks:
                    cb(step, state)
                train_time += time.time() - t0
                if step > start_step + 1:  # the first step compiles
                    step_seconds = (step_seconds + [time.time() - t0])[-20:]

                stop = stopper.agreed()  # the same answer on every process
                if step % int(config.checkpoint_every_steps) == 0 or step == num_steps or stop:
                    _check_finite(step, {}, state, net, (restored, last_ckpt, verified), algo.divergence_hint)
                    checkpointing.save(manager, step, state, config=config.to_dict())
                    last_ckpt = step
                    if is_main:
                        run_files.record_wall_time(workdir, step, wall_before + time.time() - t_start)
                if stop and step < num_steps:
                    preempted = True
                    logging.warning(
                        "Stopped by %s at step %d (checkpoint saved); rerun the same command to resume",
                        stopper.signal_name or "a signal on another process",
                        step,
                    )
                    break
            if not preempted and not eval_metrics:  # nothing left to train (e.g. resumed at the end)
                eval_metrics = evaluate(eval_step, state, ds, config, mesh)
        failed = False
    finally:
        if failed:  # the error in flight is the one to report: close without adding others
            checkpointing.close_quietly(manager)
        else:
            checkpointing.wait_and_close(manager)
        if writer is not None:
            writer.close()

    results = {
        "algorithm": algo.name,
        "dataset": info.name,
        "model": net.name,
        "eval_set": ds.eval_name,
        "final_test_accuracy": eval_metrics.get("eval/accuracy"),
        "final_test_top5_accuracy": eval_metrics.get("eval/top5_accuracy"),
        "final_test_loss": eval_metrics.get("eval/loss"),
        "steps": int(step),
        "num_train_steps": num_steps,
        "epochs": step / steps_per_epoch,
        "forward_epochs": algo.forward_epochs(int(step)),  # epochs that trained the forward weights
        "preempted": preempted,
        "stop_signal": stopper.signal_name if preempted else None,
        "complete": not preempted and int(step) >= num_steps,
        "wall_time_s": wall_before + time.time() - t_start,  # over all segments of a resumed run
        "segment_wall_time_s": time.time() - t_start,
        "train_loop_time_s": train_time,
        "devices": int(mesh.devices.size),
        "processes": jax.process_count(),
        "hardware": environment.describe(),
        "config": config.to_dict(),
    }
    if is_main and results["complete"]:
        if start_step:
            _set_aside_earlier_results(workdir, start_step)
        else:
            _keep_unreadable_results(workdir)
        run_files.write_json_atomic(os.path.join(workdir, run_files.RESULTS), results)
    if is_main:
        try:
            run_plots.plot_workdir(workdir)
        except Exception as e:  # noqa: BLE001 - a figure must never cost a finished run
            logging.warning("Could not draw %s/summary.png: %s", workdir, e)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jdtp_train_end")
    return results


def _keep_unreadable_results(workdir: str) -> None:
    unreadable = run_files.keep_unreadable(os.path.join(workdir, run_files.RESULTS))
    if unreadable:
        logging.warning("%s was unreadable: kept as %s", run_files.RESULTS, unreadable)


def _set_aside_earlier_results(workdir: str, start_step: int) -> None:
    """Keep an earlier segment's ``results.json`` as ``results.step<start_step>.json``."""
    _keep_unreadable_results(workdir)
    kept = run_files.set_aside_results(workdir, start_step)
    if kept:
        logging.info("The earlier result of this workdir is kept as %s", kept)


def _per_layer(prefix: str, values, names) -> dict[str, float]:
    return {f"{prefix}/{name}": float(v) for name, v in zip(names, np.asarray(values), strict=True)}
