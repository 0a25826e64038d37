"""`embstore verify`: do the catalog and the activations table agree? With repair, make them agree.

Checked: every pinned file exists and holds the rows the catalog says; the pinned Delta version is
the table's latest, or newer versions hold only rewrites (compaction) and no rows of batches the
catalog never recorded; per model layer, the pinned rows equal what the recorded batches hold.
Files in the table's folder that no log entry names (a writer killed before logging them) are
listed: harmless to every reader, and deleted by repair. Repair (under the writer lock):
`reconcile()` deletes uncommitted rows and pins the latest version; missing files are dropped
from the Delta log and corrupt ones moved to <store>/quarantine first; images that lost a vector
are forgotten for that model (their other rows deleted too), so the next
`embstore ingest` stores them again, whole. Layers an earlier embstore stored as a module's last
call under the name of its first (store/layercheck.py) are listed, and repair removes their vectors.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from typing import TYPE_CHECKING

from embstore.spec import ModelKey
from embstore.store import layercheck
from embstore.store.catalog import Catalog
from embstore.store.locks import writer_running
from embstore.store.table import ActivationTable

if TYPE_CHECKING:
    from embstore.store.core import StoreCore
    from embstore.store.layercheck import ModuleCalls


@dataclass
class VerifyReport:
    files: int = 0
    rows: int = 0
    missing: list[str] = field(default_factory=list)  # pinned, not on disk
    corrupt: list[str] = field(default_factory=list)  # unreadable or wrong row count
    uncommitted_batches: int = 0  # rows in the table of batches the catalog never recorded
    unpinned_versions: int = 0  # table versions newer than the pin (harmless rewrites, or the above)
    count_mismatches: list[str] = field(default_factory=list)  # model/layer: pinned rows != recorded
    interrupted_runs: int = 0
    unlisted_files: list[str] = field(default_factory=list)  # in the table's folder, named by no log entry
    table_version: int | None = None
    wrong_layers: list[str] = field(default_factory=list)  # stored by an earlier embstore as another node
    outside: list[str] = field(default_factory=list)  # file names leading outside the table: never touched
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.corrupt
            or self.uncommitted_batches
            or self.count_mismatches
            or self.wrong_layers
            or self.outside
        )


def verify(store: StoreCore, *, repair: bool = False, module_calls: ModuleCalls | None = None) -> VerifyReport:
    """Check (and with `repair`, fix) the store; repair needs the writer lock held by the caller.
    `module_calls`: how layers stored before they were graph nodes are checked (layercheck.py)."""
    table = ActivationTable(store)
    report = VerifyReport()
    if repair:
        if store.restored:  # open(restore_catalog=True) replaced a damaged catalog by its snapshot
            report.repaired.append(store.restored)
            store.restored = None
        report.repaired += table.reconcile()
    _check(store, table, report, holding_lock=repair)
    wrong, right = _check_layers(store, table, report, module_calls)
    if repair and (wrong or right):
        report.repaired += layercheck.repair(store, table, wrong, right)
        report.wrong_layers = []
    if repair and report.unlisted_files:  # the writer lock is held: no append is in flight
        for path in report.unlisted_files:
            table.location.filesystem.delete_file(path)
        report.repaired.append(f"deleted {len(report.unlisted_files)} data file(s) no table version lists")
        report.unlisted_files = []
    if repair and report.outside:
        _repair_outside(store, table, report)
    if repair and (report.missing or report.corrupt or report.count_mismatches or report.interrupted_runs):
        _repair(store, table, report)
        fresh = VerifyReport(repaired=report.repaired)
        _check(store, table, fresh, holding_lock=True)
        _check_layers(store, table, fresh, module_calls)
        return fresh
    return report


def _check_layers(store: StoreCore, table: ActivationTable, report: VerifyReport, module_calls):
    """Layers an earlier embstore stored under a name that now means another graph node (layercheck.py)."""
    wrong, right, notes = layercheck.check(store, table, module_calls)
    report.wrong_layers = [f"{w.model_key} {w.layer}: {w.reason}" for w in wrong]
    report.notes += notes
    return wrong, right


def _check(store: StoreCore, table: ActivationTable, report: VerifyReport, *, holding_lock: bool = False) -> None:
    """Fill `report`; `holding_lock`: the caller is the writer (repair), so no other one is running."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with store.read() as con:
        cat = Catalog(con)
        files = cat.pinned_file_rows()
        expected = cat.expected_rows()
        pinned = cat.pinned_rows()
        pinned_version = cat.table_version()
        running = cat.running_runs()
    report.table_version = pinned_version
    other_writer = not holding_lock and writer_running(store.path)
    report.interrupted_runs = 0 if other_writer else running
    for rel, _, _, n_rows in files:
        report.files += 1
        if not table.location.inside(rel):  # a crafted row or a link: reported, never opened
            report.outside.append(rel)
            continue
        if not table.location.exists(rel):
            report.missing.append(rel)
            continue
        try:
            with table.location.open(rel) as f:
                actual = pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException):  # unreadable or not Parquet: counted as corrupt
            actual = -1
        if actual != n_rows:
            report.corrupt.append(rel)
        else:
            report.rows += n_rows
    for key in sorted(set(expected) | set(pinned)):
        if expected.get(key, 0) != pinned.get(key, 0):
            report.count_mismatches.append(
                f"{key[0]} {key[1]}: {pinned.get(key, 0)} vectors pinned, {expected.get(key, 0)} recorded"
            )
    dt = table.delta()
    report.outside += [rel for rel in table.outside_log(dt) if rel not in report.outside]
    if not other_writer:  # a running writer's files are unlisted until it logs them
        report.unlisted_files = table.unlisted_files(dt)
    if dt is not None and dt.version() != pinned_version:  # pinned None: a first batch never recorded
        report.unpinned_versions = dt.version() - (pinned_version if pinned_version is not None else -1)
        if other_writer:  # its batch between append and catalog commit is in flight, not lost
            report.notes.append("an ingest is running: table versions it has not recorded yet are not counted")
        else:
            try:
                report.uncommitted_batches = len(table.stray_batches(dt)[1])
            except (OSError, pa.ArrowException):
                report.uncommitted_batches = -1  # unreadable newer files: repair reconciles


def _repair_outside(store: StoreCore, table: ActivationTable, report: VerifyReport) -> None:
    """Drop catalog rows naming files outside the table by pinning again what the Delta log lists; the
    files themselves are never touched. Log entries that lead outside are left for a person to judge."""
    import os

    dt = table.delta()
    in_log = set(table.outside_log(dt))
    for rel in sorted(in_log):  # a file of the table replaced by a link: the link goes, its target stays
        path = table.location.unchecked_path(rel)
        if not table.location.remote and os.path.islink(path) and table.location.inside(os.path.dirname(rel)):
            target = os.path.realpath(path)
            os.unlink(path)
            report.repaired.append(f"removed {rel}, a symbolic link to {target} (the target untouched)")
            report.missing.append(rel)  # then dropped from the table like any lost file
            in_log.discard(rel)
    rows = [rel for rel in report.outside if rel not in in_log and rel not in report.missing]
    if rows and dt is not None:
        with store.transaction() as con:
            table.pin(con, dt)
        report.repaired.append(f"dropped {len(rows)} catalog row(s) naming files outside the store (files untouched)")
    if in_log:
        report.notes.append(
            f"the Delta log names {len(in_log)} file(s) outside the table (e.g. {sorted(in_log)[0]}); left as they "
            "are: restore the table's _delta_log from a backup"
        )
    report.outside = sorted(in_log)


def _repair(store: StoreCore, table: ActivationTable, report: VerifyReport) -> None:
    import shutil

    for rel in report.corrupt:  # a copy in <store>/quarantine, then gone from the table's folder
        dst = store.quarantine_root / rel.split("://", 1)[-1].lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        with table.location.open(rel) as src, open(dst, "wb") as out:
            shutil.copyfileobj(src, out)
        table.location.delete(rel)
        report.repaired.append(f"moved {rel} to quarantine/")
    dt = table.delta()
    if dt is not None and (report.missing or report.corrupt):
        dt.repair(dry_run=False)
        report.repaired.append(f"dropped {len(report.missing) + len(report.corrupt)} lost file(s) from the table")
        dt = table.delta()
        with store.transaction() as con:
            table.pin(con, dt)
    lost = _lost_images(store, table)
    for model_key, ids in lost.items():
        name, weights = astuple(ModelKey.parse(model_key))
        if dt is not None:
            from embstore.store.duck import sql_literal

            dt.delete(
                f"model = {sql_literal(name)} AND weights = {sql_literal(weights)} AND image_id IN ("
                + ", ".join(sql_literal(i) for i in sorted(ids))
                + ")"
            )
            dt = table.delta()
        with store.transaction() as con:
            Catalog(con).forget_images(model_key, sorted(ids))
            if dt is not None:
                table.pin(con, dt)
        report.repaired.append(f"forgot {len(ids)} image(s) of {model_key} that lost vectors; re-run ingest for them")
    if report.interrupted_runs:
        with store.transaction() as con:
            Catalog(con).mark_stale_runs()
        report.repaired.append(f"marked {report.interrupted_runs} unfinished run(s) interrupted")


def _lost_images(store: StoreCore, table: ActivationTable) -> dict[str, set[str]]:
    """{model_key: image ids recorded with a layer whose vector the pinned files no longer hold}."""
    with store.read() as con:
        cat = Catalog(con)
        expected, pinned = cat.expected_rows(), cat.pinned_rows()
        todo = [k for k in expected if expected[k] != pinned.get(k, 0)]
        recorded = {k: cat.images_of_layer(*k) for k in todo}
    lost: dict[str, set[str]] = {}
    for model_key, layer in todo:
        present = set()
        for ids, _ in table.iter_layer(model_key, layer):
            present.update(ids)
        gone = recorded[(model_key, layer)] - present
        if gone:
            lost.setdefault(model_key, set()).update(gone)
    return lost
