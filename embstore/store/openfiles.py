"""The open-files limit a store needs, checked once per process before anything is opened.

DuckDB, delta-rs (a tokio runtime per table handle) and Parquet readers each hold descriptors;
under a tiny `ulimit -n` they fail in ways no caller can catch: DuckDB aborts the process on an
internal error, delta-rs panics (a BaseException with a Rust backtrace on stderr). So the soft
limit is raised towards the hard one (as far as WANTED), and a hard limit below NEEDED is refused
with one line before the store is touched.
"""

from __future__ import annotations

from embstore.errors import StoreError

NEEDED = 64  # measured: a local ingest with compaction needs ~18 descriptors; the rest is margin
WANTED = 4096  # Parquet scans over many files, DataLoader workers, Ray

_checked = False


def ensure_open_files() -> None:
    """Raise the soft RLIMIT_NOFILE to min(hard, WANTED) where it is lower; StoreError if even the
    hard limit is below NEEDED. Once per process; nothing happens where there is no such limit."""
    global _checked
    if _checked:
        return
    try:
        import resource
    except ImportError:  # not POSIX
        _checked = True
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = WANTED if hard == resource.RLIM_INFINITY else min(hard, WANTED)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < NEEDED:
        raise StoreError(
            f"this process may open only {soft} files at once (ulimit -n; hard limit {hard}); embstore needs "
            f"at least {NEEDED}: raise it, e.g. `ulimit -n 1024`, and run the command again"
        )
    _checked = True
