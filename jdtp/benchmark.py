"""Step-time, FLOP and memory benchmark of the DTP and BP train steps.

    python -m jdtp.benchmark --configs=lenet,vgg --repeats=5 --out=results/benchmark.json
    python -m jdtp.benchmark --configs=lenet --batch_size=lenet=100

For each configuration it builds the real network and hyperparameters, feeds
random inputs of the real shapes to the jitted steps of ``jdtp.steps``, and
records (after compilation and one warm-up step) the median step time of DTP
and BP, interleaved so that machine noise hits both alike. In the same run it
measures the machine's speed on a large matrix product and on the network's
largest convolution, so every time can be read as a fraction of peak.

FLOPs come from two sources, both recorded:

* ``flops_xla``: XLA's ``compiled.cost_analysis()`` of the whole step. XLA's
  HLO cost analysis counts the body of a ``while`` loop (our ``lax.scan`` over
  the K L-DRL iterations) only once, so for DTP it undercounts by about K.
* ``flops_analytic``: the matrix products and convolutions of the algorithm
  as jdtp computes it (elementwise work left out, a few percent at most). The
  ratios and GFLOP/s use this count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jdtp import feedback, optim, steps
from jdtp import networks as nets


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One network with its DTP hyperparameters (spec §4) and a batch size."""

    name: str
    arch: str
    batch_size: int
    beta: float
    noise_scale: tuple[float, ...]
    num_fb_iters: tuple[int, ...]
    fb_lr: tuple[float, ...]
    lr: float
    arch_kwargs: tuple[tuple[str, Any], ...] = ()
    input_shape: tuple[int, int, int] = (32, 32, 3)
    num_classes: int = 10


CONFIGS = {
    # LeNet / CIFAR-10, the wandb-run hyperparameters (spec §4.3). The batch is
    # 128; the authors' quoted time is at the paper's batch 100 (--batch_size=lenet=100).
    "lenet": BenchConfig(
        name="lenet",
        arch="lenet",
        batch_size=128,
        beta=0.46550286113514694,
        noise_scale=(0.41640228838517584, 0.3826261146623929, 0.13953820693586017),
        num_fb_iters=(41, 51, 24),
        fb_lr=(0.0007188427494432325, 0.00012510321884615596, 0.03541466958291287),
        lr=0.03618358843718276,
    ),
    # SimpleVGG / CIFAR-10, paper Table 7 (spec §4.1).
    "vgg": BenchConfig(
        name="vgg",
        arch="simple_vgg",
        batch_size=128,
        beta=0.7,
        noise_scale=(0.4, 0.4, 0.2, 0.2, 0.08),
        num_fb_iters=(20, 30, 35, 55, 20),
        fb_lr=(1e-4, 3.5e-4, 8e-3, 8e-3, 0.18),
        lr=0.05,
    ),
}

# Per-step times of the authors' PyTorch code quoted in the issue (seconds).
AUTHORS_SECONDS = {"lenet": {"bp": 0.18}, "vgg": {"bp": 1.03}}


# ---------------------------------------------------------------------------
# Analytic FLOPs.


def block_flops(block: nets.Block, batch: int) -> int:
    """FLOPs (2 per multiply-add) of F^n's linear map on a batch; G's is the same count."""
    if isinstance(block, nets.ConvBlock):
        ho, wo, cout = block.conv_shape
        k, cin = block.kernel_size, block.in_shape[2]
        return 2 * batch * ho * wo * k * k * cin * cout
    return 2 * batch * block.in_features * block.features


def fb_iteration_linear_maps(closed_form: bool) -> int:
    """Linear maps (each of one block's FLOPs) per L-DRL iteration, as jdtp computes it.

    Autodiff form: F(x+dx), G's linear part on the two differences, and the two
    weight gradients: 5. Closed form (``feedback.ldrl_value_and_grad``): the
    loss's first term comes from the weight gradient, so G's map on Δ1 is
    skipped: 4.
    """
    return 4 if closed_form else 5


def analytic_flops(net: nets.Network, batch: int, num_fb_iters, closed_form: bool = True) -> dict:
    """Matrix-product/convolution FLOPs of one DTP step and one BP step.

    DTP: Σ_n K_n × (maps per iteration) × M_n for the feedback phase, plus the
    forward update: forward pass (M_n each), target propagation (one G map per
    n ≥ 1) and the weight gradients (M_n each). BP: forward, weight gradients,
    and input gradients for every block but the first.
    """
    m = [block_flops(b, batch) for b in net.blocks]
    per_iter = fb_iteration_linear_maps(closed_form)
    fb = sum(int(k) * per_iter * m[n] for n, k in enumerate(num_fb_iters, start=1))
    fwd_update = 2 * sum(m) + sum(m[1:])
    bp = 3 * sum(m) - m[0]
    return {"dtp": fb + fwd_update, "dtp_feedback": fb, "dtp_forward_update": fwd_update, "bp": bp}


def _xla_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def _memory_analysis(compiled) -> dict | None:
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        return None
    if mem is None:
        return None
    fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes")
    return {f: int(getattr(mem, f)) for f in fields if hasattr(mem, f)}


# ---------------------------------------------------------------------------
# Peak measurements.


def _time_fn(fn, args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of one ``n × n × n`` float32 matrix product."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    seconds = _time_fn(jax.jit(jnp.matmul), (a, b), repeats)
    return {"shape": [n, n, n], "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


def largest_conv(net: nets.Network) -> nets.ConvBlock | None:
    convs = [b for b in net.blocks if isinstance(b, nets.ConvBlock)]
    return max(convs, key=lambda b: block_flops(b, 1)) if convs else None


def conv_peak(block: nets.ConvBlock, batch: int, impl: str, repeats: int = 5) -> dict:
    """GFLOP/s of ``block``'s forward convolution (no bias/activation/pool) with ``impl``."""
    x = jax.random.normal(jax.random.key(0), (batch, *block.in_shape), jnp.float32)
    k, cin = block.kernel_size, block.in_shape[2]
    w = jax.random.normal(jax.random.key(1), (k, k, cin, block.features), jnp.float32)
    fn = jax.jit(lambda x, w: nets.conv(x, w, block.stride, block.padding, impl))
    seconds = _time_fn(fn, (x, w), repeats)
    flops = block_flops(block, batch)
    return {
        "block": block.name,
        "impl": impl,
        "flops": flops,
        "seconds": seconds,
        "gflops": flops / seconds / 1e9,
    }


# ---------------------------------------------------------------------------
# Train-step benchmark.


def build(
    cfg: BenchConfig,
    conv_impl: str = "auto",
    probe: str = "difference",
    unroll: int = 1,
    closed_form: bool = True,
):
    """(network, DTPHParams, forward optimizer, feedback optimizers) of a config."""
    net = nets.build_network(
        cfg.arch, cfg.input_shape, cfg.num_classes, conv_impl=conv_impl, **dict(cfg.arch_kwargs)
    )
    hp = steps.DTPHParams(
        beta=cfg.beta,
        noise_scale=tuple(cfg.noise_scale),
        num_fb_iters=tuple(cfg.num_fb_iters),
        fb_lr=tuple(cfg.fb_lr),
        probe=probe,
        unroll=unroll,
        ldrl_closed_form=closed_form,
    )
    fwd_tx = optim.make_fwd_optimizer(optim.make_schedule(cfg.lr, 390))
    fb_txs = feedback.make_fb_optimizers(hp.fb_lr)
    return net, hp, fwd_tx, fb_txs


def _rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _device_memory() -> dict | None:
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    if not stats:
        return None
    keep = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(v) for k, v in stats.items() if k in keep}


def benchmark_config(
    cfg: BenchConfig,
    repeats: int = 5,
    conv_impl: str = "auto",
    probe: str = "difference",
    unroll: int = 1,
    closed_form: bool = True,
    measure_peaks: bool = True,
    seed: int = 0,
    matmul_n: int = 2048,
) -> dict:
    """Compile and time one DTP and one BP train step of ``cfg``; see the module docstring."""
    net, hp, fwd_tx, fb_txs = build(cfg, conv_impl, probe, unroll, closed_form)
    b = cfg.batch_size
    key = jax.random.key(seed)
    images = jax.random.normal(jax.random.fold_in(key, 1), (b, *cfg.input_shape), jnp.float32)
    labels = jax.random.randint(jax.random.fold_in(key, 2), (b,), 0, cfg.num_classes)
    batch = {"image": images, "label": labels}

    runs = {}
    for algo in ("dtp", "bp"):
        txs = fb_txs if algo == "dtp" else ()
        state = steps.create_train_state(jax.random.fold_in(key, 3), net, fwd_tx, txs)
        if algo == "dtp":
            step = steps.make_dtp_train_step(net, fwd_tx, fb_txs, hp)
        else:
            step = steps.make_bp_train_step(net, fwd_tx)
        t0 = time.perf_counter()
        compiled = step.lower(state, batch, key).compile()
        compile_s = time.perf_counter() - t0
        state, metrics = compiled(state, batch, jax.random.fold_in(key, 100))  # warm-up
        jax.block_until_ready((state, metrics))
        runs[algo] = {"compiled": compiled, "state": state, "compile_s": compile_s, "times": []}

    # Interleave DTP and BP so that load from other jobs affects both alike.
    for r in range(repeats):
        for algo in ("dtp", "bp"):
            run = runs[algo]
            t0 = time.perf_counter()
            run["state"], metrics = run["compiled"](run["state"], batch, jax.random.fold_in(key, r))
            jax.block_until_ready((run["state"], metrics))
            run["times"].append(time.perf_counter() - t0)
            if not all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(metrics)):
                raise FloatingPointError(f"{cfg.name} {algo}: non-finite metrics {metrics}")

    closed_form = probe == "difference" and closed_form
    flops = analytic_flops(net, b, hp.num_fb_iters, closed_form)
    out: dict[str, Any] = {
        "config": cfg.name,
        "arch": cfg.arch,
        "batch_size": b,
        "input_shape": list(cfg.input_shape),
        "num_fb_iters": list(hp.num_fb_iters),
        "noise_scale": list(hp.noise_scale),
        "fb_lr": list(hp.fb_lr),
        "beta": hp.beta,
        "probe": probe,
        "unroll": unroll,
        "ldrl_closed_form": closed_form,
        "conv_impls": sorted({blk.conv_impl for blk in net.blocks if isinstance(blk, nets.ConvBlock)}),
        "repeats": repeats,
    }
    for algo, run in runs.items():
        t = statistics.median(run["times"])
        out[algo] = {
            "compile_s": run["compile_s"],
            "step_s_median": t,
            "step_s_all": run["times"],
            "images_per_s": b / t,
            "flops_analytic": flops[algo],
            "flops_xla": _xla_flops(run["compiled"]),
            "gflops_achieved": flops[algo] / t / 1e9,
            "memory_analysis": _memory_analysis(run["compiled"]),
        }
    out["dtp"]["flops_analytic_feedback"] = flops["dtp_feedback"]
    out["dtp"]["flops_analytic_forward_update"] = flops["dtp_forward_update"]
    out["time_ratio_dtp_bp"] = out["dtp"]["step_s_median"] / out["bp"]["step_s_median"]
    out["flop_ratio_dtp_bp"] = flops["dtp"] / flops["bp"]
    out["time_ratio_over_flop_ratio"] = out["time_ratio_dtp_bp"] / out["flop_ratio_dtp_bp"]
    out["host_peak_rss_mib"] = _rss_mib()
    out["device_memory"] = _device_memory()
    out["authors_step_s"] = AUTHORS_SECONDS.get(cfg.name)

    if measure_peaks:
        blk = largest_conv(net)
        peaks: dict[str, Any] = {"matmul": matmul_peak(matmul_n, max(repeats, 3))}
        if blk is not None:
            # The forward convolution of each implementation ('mixed' runs XLA's).
            fwd_impl = "xla" if blk.conv_impl == "mixed" else blk.conv_impl
            peaks["largest_conv"] = {i: conv_peak(blk, b, i, max(repeats, 3)) for i in ("im2col", "xla")}
            peaks["largest_conv_jdtp"] = fwd_impl
            conv_gflops = peaks["largest_conv"][fwd_impl]["gflops"]
            out["dtp_fraction_of_conv_peak"] = out["dtp"]["gflops_achieved"] / conv_gflops
            out["bp_fraction_of_conv_peak"] = out["bp"]["gflops_achieved"] / conv_gflops
        out["dtp_fraction_of_matmul_peak"] = out["dtp"]["gflops_achieved"] / peaks["matmul"]["gflops"]
        out["peaks"] = peaks
    return out


def environment() -> dict:
    dev = jax.devices()[0]
    return {
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def summary_line(r: dict) -> str:
    d, b = r["dtp"], r["bp"]
    frac = r.get("dtp_fraction_of_conv_peak")
    frac_s = f"{frac:.0%}" if frac is not None else "n/a"
    return (
        f"{r['config']:6s} B={r['batch_size']:<4d} DTP {d['step_s_median']:8.3f} s "
        f"({d['images_per_s']:7.1f} img/s, {d['gflops_achieved']:6.1f} GFLOP/s, compile {d['compile_s']:.1f} s) | "
        f"BP {b['step_s_median']:7.3f} s ({b['gflops_achieved']:6.1f} GFLOP/s) | "
        f"time ratio {r['time_ratio_dtp_bp']:6.1f}, FLOP ratio {r['flop_ratio_dtp_bp']:6.1f}, "
        f"time/FLOP ratio {r['time_ratio_over_flop_ratio']:.2f} | DTP at {frac_s} of conv peak"
    )


def run(
    configs=("lenet", "vgg"),
    repeats: int = 5,
    batch_sizes: dict | None = None,
    conv_impl: str = "auto",
    probe: str = "difference",
    unroll: int = 1,
    out: str | None = None,
    closed_form: bool = True,
    overrides: dict | None = None,
    matmul_n: int = 2048,
) -> dict:
    """Benchmark each named config (or :class:`BenchConfig`) and optionally write JSON to ``out``."""
    results = {"environment": environment(), "results": []}
    for c in configs:
        cfg = CONFIGS[c] if isinstance(c, str) else c
        if batch_sizes and cfg.name in batch_sizes:
            cfg = dataclasses.replace(cfg, batch_size=int(batch_sizes[cfg.name]))
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        r = benchmark_config(cfg, repeats, conv_impl, probe, unroll, closed_form, matmul_n=matmul_n)
        logging.info("%s", summary_line(r))
        peaks = r.get("peaks", {})
        if peaks:
            conv = ", ".join(f"{i} {p['gflops']:.1f}" for i, p in peaks.get("largest_conv", {}).items())
            logging.info(
                "       peaks GFLOP/s: matmul %d^3 %.1f; %s", matmul_n, peaks["matmul"]["gflops"], conv
            )
        results["results"].append(r)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            json.dump(results, f, indent=2, default=_json_default)
    return results


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _parse_batch_sizes(values, configs) -> dict:
    """``['100']`` applies to every config; ``['lenet=100', 'vgg=64']`` per config."""
    out = {}
    for v in values or ():
        if "=" in v:
            name, size = v.split("=", 1)
            out[name] = int(size)
        else:
            out.update({c: int(v) for c in configs})
    return out


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    configs = [c for c in f.configs if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise ValueError(f"unknown configs {sorted(unknown)}; expected some of {sorted(CONFIGS)}")
    run(
        configs,
        f.repeats,
        _parse_batch_sizes(f.batch_size, configs),
        f.conv_impl,
        f.probe,
        f.unroll,
        f.out,
        closed_form=f.ldrl_closed_form,
    )


def _define_flags():
    from absl import flags

    flags.DEFINE_list("configs", ["lenet", "vgg"], f"Configs to run, from {sorted(CONFIGS)}.")
    flags.DEFINE_integer("repeats", 5, "Timed steps per algorithm (median reported).")
    flags.DEFINE_list("batch_size", [], "Batch size for all configs (N) or per config (name=N,...).")
    flags.DEFINE_string(
        "conv_impl", "auto", "'auto' (mixed on CPU, xla elsewhere), 'xla', 'im2col' or 'mixed'."
    )
    flags.DEFINE_bool("ldrl_closed_form", True, "Closed-form L-DRL gradient (else autodiff).")
    flags.DEFINE_string("probe", "difference", "L-DRL probe: 'difference' or 'jvp'.")
    flags.DEFINE_integer("unroll", 1, "lax.scan unroll of the L-DRL iterations.")
    flags.DEFINE_string("out", "results/benchmark.json", "Where to write the JSON results.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
