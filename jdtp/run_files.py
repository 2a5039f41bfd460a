"""The files a run keeps in its workdir besides checkpoints, written so that no result is lost.

* ``results.json``: written once at the end, atomically (temp file + rename), with
  ``complete: true``; a rerun of a complete run reports it and trains nothing.
* ``config.json``: the config the run started with; a resume compares against it. Every
  checkpoint's record in ``checksums.json`` and ``results.json`` hold it too, so a missing or
  unreadable ``config.json`` is rebuilt from them (:func:`recover_config`).
* ``timing.json``: cumulative wall time at each checkpointed step, so the final
  wall time counts every segment of a resumed run.
* ``metrics.jsonl``: one JSON record per line; a half-written last line (a kill
  during a write) is dropped on resume with a warning.
* ``.lock``: held (``flock``) by the one process that runs in the workdir (:class:`WorkdirLock`);
  the kernel releases it when that process ends, however it ends.

A write that fails raises :class:`RunFileError` naming the file and the cause.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import sys
import tempfile
import time
from typing import Any

from absl import logging

from jdtp import config_base

RESULTS = "results.json"
CONFIG = "config.json"
TIMING = "timing.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"


class RunFileError(OSError):
    """A run file could not be written (disk full, file too large, permissions): the run stops."""


class WorkdirBusyError(RuntimeError):
    """Another live process is running in this workdir."""


def describe_os_error(e: BaseException) -> str:
    """The cause of a failed write in a few words, e.g. ``'No space left on device'``.

    Orbax and TensorStore report OS errors inside long messages (``... [os_error_code='28']``):
    the errno is taken from there when present.
    """
    import re

    if isinstance(e, OSError) and e.errno is not None:
        return e.strerror or errno.errorcode.get(e.errno, str(e.errno))
    text = str(e)
    code = re.search(r"os_error_code='?(\d+)|\[Errno (\d+)\]", text)
    if code:
        return os.strerror(int(code.group(1) or code.group(2)))
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:200]


def write_failed(path: str, e: BaseException) -> RunFileError:
    """The one-line error for a failed write of ``path``."""
    return RunFileError(
        f"could not write {path} ({describe_os_error(e)}); free disk space or fix the permissions or "
        "file-size limit, then rerun the same command: it resumes from the newest checkpoint"
    )


def write_json_atomic(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temp file and ``os.replace`` (never half-written).

    Raises:
      RunFileError: the write failed; ``path`` is unchanged.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=directory)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise write_failed(path, e) from e
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str | None) -> None:
    if path and os.path.exists(path):
        try:
            os.remove(path)
        except OSError:
            pass


def append_line(path: str, line: str) -> None:
    """Append one line to ``path`` (flushed); :class:`RunFileError` if it cannot be written whole."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
    except OSError as e:
        raise write_failed(path, e) from e


class WorkdirLock:
    """One process per workdir: an exclusive ``flock`` on ``workdir/.lock`` for the run's lifetime.

    The lock file names its holder (pid, host, start time, command). A second start stops with
    :class:`WorkdirBusyError` naming it; a process that dies releases the lock with it (the
    kernel drops ``flock`` locks of closed descriptors), so a crash never leaves the workdir stuck.
    Remote workdirs (``gs://``) are not locked.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK)
        self._fd: int | None = None

    def __enter__(self):
        import fcntl

        if "://" in self.path:
            return self
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_failed(self.path, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise write_failed(self.path, e) from e
            raise WorkdirBusyError(
                f"{os.path.dirname(self.path)} is in use by another process ({self.holder()}); wait for it "
                "to end or stop it (its checkpoint is kept), or choose another --workdir"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def holder(self) -> str:
        info = read_json(self.path) or {}
        if not info:
            return "holder unknown"
        return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}: {info.get('command')}"

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (it names no live holder then)
            self._fd = None


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
    return _keep_aside(path, f"results.step{step}")


def _keep_aside(path: str, stem: str) -> str:
    """Rename ``path`` to ``<dir>/<stem>.json`` (``<stem>.<i>.json`` if taken); returns the new path."""
    directory = os.path.dirname(path)
    target = os.path.join(directory, f"{stem}.json")
    i = 1
    while os.path.exists(target):
        target = os.path.join(directory, f"{stem}.{i}.json")
        i += 1
    os.replace(path, target)
    return target


def keep_unreadable(path: str) -> str | None:
    """Set an unreadable (garbled or truncated) JSON file aside as ``<name>.unreadable.<time>.json``.

    Returns the new path, or ``None`` when ``path`` is absent or readable.
    """
    if not os.path.isfile(path) or read_json(path) is not None:
        return None
    stem = os.path.basename(path)[: -len(".json")] + time.strftime(".unreadable.%Y%m%d-%H%M%S")
    return _keep_aside(path, stem)


def recover_config(workdir: str, checkpoint_records: dict | None) -> tuple[dict | None, str]:
    """The run's stored config from ``config.json``, else from where it is also kept.

    Looks in ``config.json``, then the newest checkpoint record (``checksums.json``) holding a
    config, then ``results.json`` and the results set aside by earlier segments.

    Returns:
      ``(config or None, where it came from)``.
    """
    stored = read_json(os.path.join(workdir, CONFIG))
    if isinstance(stored, dict):
        return stored, CONFIG
    for step in sorted((int(k) for k in (checkpoint_records or {}) if k.isdigit()), reverse=True):
        config = checkpoint_records[str(step)].get("config")
        if isinstance(config, dict):
            return config, f"the record of checkpoint step {step}"
    candidates = (
        [RESULTS]
        + sorted(
            (n for n in os.listdir(workdir) if n.startswith("results.step") and n.endswith(".json")),
            reverse=True,
        )
        if os.path.isdir(workdir)
        else []
    )
    for name in candidates:
        data = read_json(os.path.join(workdir, name))
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            return data["config"], name
    return None, ""


class DamagedMetricsError(ValueError):
    """A line other than the last of ``metrics.jsonl`` is not JSON: damaged, not interrupted."""


def read_metrics(path: str) -> list[dict]:
    """Records of a ``metrics.jsonl``; blank lines are skipped, a partial *last* line is dropped.

    Raises:
      DamagedMetricsError: a line other than the last is not JSON (the file is damaged, not
        interrupted); the message names the line and the fix.
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
                raise DamagedMetricsError(
                    f"{path}: line {i + 1} of {len(lines) - 1} is not JSON ({line[:40]!r}), and lines follow it: "
                    f"the file is damaged, not cut short by a stop; fix or delete line {i + 1} (a copy first: "
                    f"cp {path} {path}.bak), then rerun"
                ) from None
            logging.warning("%s: dropping a half-written last line (%d bytes)", path, len(line))
    return records


def truncate_metrics(path: str, last_step: int) -> None:
    """Keep the records up to ``last_step`` (a resumed run redoes the rest), rewritten atomically."""
    try:
        records = read_metrics(path)
    except OSError as e:
        raise write_failed(path, e) from e
    kept = [r for r in records if r.get("step", 0) <= last_step]
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise write_failed(path, e) from e


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
    defining = [k for k in changed if k not in config_base.HARMLESS_KEYS]
    harmless = [k for k in changed if k in config_base.HARMLESS_KEYS]
    return defining, harmless
