"""The files a run keeps in its workdir besides checkpoints, written so that no result is lost.

* ``results.json``: written once at the end, atomically (temp file + rename), with
  ``complete: true``; a rerun of a complete run reports it and trains nothing.
* ``config.json``: the config the run started with; a resume compares against it.
* ``timing.json``: cumulative wall time at each checkpointed step, so the final
  wall time counts every segment of a resumed run.
* ``metrics.jsonl``: one JSON record per line; a half-written last line (a kill
  during a write) is dropped on resume with a warning.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from absl import logging

RESULTS = "results.json"
CONFIG = "config.json"
TIMING = "timing.json"
METRICS = "metrics.jsonl"


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temp file and ``os.replace`` (never half-written)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path: str) -> Any | None:
    """The JSON in ``path``, or ``None`` if it is absent or unreadable (e.g. truncated)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_results(workdir: str) -> dict | None:
    """The stored results of a *complete* run, else ``None``."""
    r = read_json(os.path.join(workdir, RESULTS))
    if isinstance(r, dict) and r.get("complete") and r.get("final_test_accuracy") is not None:
        return r
    return None


def set_aside_results(workdir: str, step: int) -> str | None:
    """Rename a complete run's ``results.json`` to ``results.step<N>.json`` (kept) before it trains on."""
    path = os.path.join(workdir, RESULTS)
    if not os.path.exists(path):
        return None
    target = os.path.join(workdir, f"results.step{step}.json")
    i = 1
    while os.path.exists(target):
        target = os.path.join(workdir, f"results.step{step}.{i}.json")
        i += 1
    os.replace(path, target)
    return target


def read_metrics(path: str) -> list[dict]:
    """Records of a ``metrics.jsonl``; blank lines are skipped, a partial *last* line is dropped.

    Raises:
      ValueError: a line other than the last is not JSON (the file is damaged, not interrupted).
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        lines = f.read().split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if any(rest.strip() for rest in lines[i + 1 :]):
                raise ValueError(f"{path}: line {i + 1} is not JSON ({line[:60]!r}...)") from None
            logging.warning("%s: dropping a half-written last line (%d bytes)", path, len(line))
    return records


def truncate_metrics(path: str, last_step: int) -> None:
    """Keep the records up to ``last_step`` (a resumed run redoes the rest), rewritten atomically."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)


def cumulative_wall_time(workdir: str, step: int | None) -> float:
    """Wall time spent to reach checkpoint ``step`` over all earlier segments (0 when starting)."""
    if step is None:
        return 0.0
    timing = read_json(os.path.join(workdir, TIMING)) or {}
    return float(timing.get("wall_time_s", {}).get(str(step), 0.0))


def record_wall_time(workdir: str, step: int, wall_time_s: float) -> None:
    """Store the cumulative wall time at checkpoint ``step``."""
    path = os.path.join(workdir, TIMING)
    timing = read_json(path) or {}
    timing.setdefault("wall_time_s", {})[str(step)] = float(wall_time_s)
    write_json_atomic(path, timing)


# Keys that do not change what a run computes (or only extend it): a resume may change them.
HARMLESS_KEYS = frozenset(
    {
        "allow_config_change",
        "checkpoint_every_steps",
        "data.data_dir",
        "data.download",
        "data.eval_batch_size",
        "eval_every_epochs",
        "eval_every_steps",
        "evals_per_epoch",
        "gmp_every_steps",
        "log_every_steps",
        "max_checkpoints_to_keep",
        "mesh_devices",
        "num_epochs",
        "num_train_steps",
    }
)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}} -> {'a.b': 1}``; tuples and lists compare as lists."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple | list) else v
    return out


def config_differences(
    stored: dict, current: dict, defaults: dict | None = None
) -> tuple[list[str], list[str]]:
    """``(defining, harmless)``: the dotted keys whose values differ between two configs.

    A key the stored config lacks but whose current value is its default (``defaults``: a config
    with every key at its default) is not a change: it was added by a later version of jdtp.
    """

    def flat(d):
        return flatten(json.loads(json.dumps(d, default=str)))

    a, b, base = flat(stored), flat(current), flat(defaults or {})
    changed = sorted(
        k
        for k in a.keys() | b.keys()
        if a.get(k, "<absent>") != b.get(k, "<absent>") and not (k not in a and k in base and base[k] == b[k])
    )
    defining = [k for k in changed if k not in HARMLESS_KEYS]
    harmless = [k for k in changed if k in HARMLESS_KEYS]
    return defining, harmless
