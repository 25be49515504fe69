"""Results on disk: atomic writes, the sweep folder's lock, npz and Parquet files,
the environment record.

Every file goes through ``atomic_write``: the bytes go to a temporary file in the
target's own folder (``.NAME.XXXXXXXX.tmp``), which is flushed and fsync'd, then
``os.replace``-d onto the target, and the folder is fsync'd. A reader, or a process
killed at any instruction, therefore sees the old file or the new one, never a part
of one; at worst a hidden ``*.tmp`` file stays behind (``remove_stale_temps``).

``FASTBIAS_FAILPOINT`` (tests only): ``"K:PHASE"`` sends SIGKILL to this process at
its K-th atomic write (counted from 1), at ``PHASE``: ``partial`` (half the bytes in
the temporary file), ``before_replace`` (temporary file complete and fsync'd) or
``after_replace`` (target replaced). ``tests/test_sweep.py`` kills sweeps this way.
"""

import io
import json
import os
import platform
import signal
import sys
import tempfile
from contextlib import contextmanager, suppress

import numpy as np

TEMP_SUFFIX = ".tmp"
FAILPOINT_ENV = "FASTBIAS_FAILPOINT"
_PHASES = ("partial", "before_replace", "after_replace")
_writes = 0


def _failpoint(phase):
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    k, _, at = spec.partition(":")
    if at not in _PHASES or not k.isdigit():
        raise ValueError(f"{FAILPOINT_ENV} must be 'K:PHASE' with PHASE one of {_PHASES}, got {spec!r}")
    if _writes == int(k) and at == phase:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data):
    """Write the bytes ``data`` to ``path`` atomically (temporary file in the same
    folder, flush, fsync, ``os.replace``, fsync of the folder). On any exception the
    temporary file is removed and ``path`` keeps its old content (or stays absent)."""
    global _writes
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    _writes += 1
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            half = len(view) // 2
            f.write(view[:half])
            f.flush()
            _failpoint("partial")
            f.write(view[half:])
            f.flush()
            os.fsync(f.fileno())
        _failpoint("before_replace")
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)
    _failpoint("after_replace")
    return path


def atomic_write_text(path, text):
    return atomic_write(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n")


def npz_bytes(arrays):
    """An uncompressed ``.npz`` of the dict ``arrays``, as bytes (no pickled objects)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_npz(path, arrays):
    return atomic_write(path, npz_bytes(arrays))


def load_npz(path):
    """The arrays of an ``.npz`` file as a dict (objects refused: ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def remove_stale_temps(folder):
    """Remove the temporary files a killed writer left in ``folder`` (not recursive)."""
    removed = 0
    with suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                with suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                removed += 1
    return removed


@contextmanager
def folder_lock(folder):
    """Hold an exclusive ``flock`` on ``folder/.lock`` (released by the kernel when the
    process ends, SIGKILL included); ``RuntimeError`` if another process holds it."""
    import fcntl

    path = os.path.join(folder, ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another fastbias process is writing to {folder} (it holds {path}); "
                               "wait for it to finish or stop it") from None
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- tables


def write_parquet(path, columns, types):
    """Write ``columns`` ({name: list}) as a Parquet table with the pyarrow ``types``
    ({name: pyarrow.DataType}), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, types[name]) for name in columns])
    table = pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items()},
                     schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return atomic_write(path, sink.getvalue().to_pybytes())


def read_parquet(path):
    """The columns of a Parquet file as a dict of lists."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pydict()


# --------------------------------------------------------------------------- environment

_PACKAGES = ("fastbias", "numpy", "scipy", "numba", "llvmlite", "cvxpy", "clarabel", "pyfftw", "rocket-fft",
             "dask", "distributed", "pyarrow", "matplotlib", "tqdm")


def _cpu_model():
    with suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment():
    """Package versions, Python, platform and CPU of this process, as a JSON-able dict."""
    from importlib import metadata

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "packages": versions,
    }
