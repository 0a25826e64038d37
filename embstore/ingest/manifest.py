"""Reading a manifest: a CSV or Parquet table of image paths (ingest's images, matching's triplets).

One reader for both, so both refuse the same things in the same words: a file Arrow cannot parse,
two columns of one name, a missing column, no rows. Column names match case-insensitively; paths
in a manifest are relative to its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embstore.errors import ManifestError


@dataclass
class Manifest:
    path: Path
    rows: list[dict]  # one dict per row, keyed by the file's own column names
    columns: dict[str, str]  # lower-case name -> the file's name
    base: Path  # the folder relative paths start from
    first_row: int  # the number a person sees for rows[0] (a CSV's line, after its header)

    def column(self, name: str) -> str | None:
        """The file's name of column `name` (any case), or None."""
        return self.columns.get(name)


def read_manifest(
    path: Path,
    what: str,
    *,
    required: tuple[str, ...],
    unique: tuple[str, ...] = (),
    rows_are: str = "rows",
    lacking: str = "lacks column(s) {missing} (has: {has})",
) -> Manifest:
    """The rows of the manifest at `path` (Parquet by its suffix, else CSV), or a ManifestError that
    names `what` it is: unreadable, a column of `unique` given twice, a column of `required`
    missing (`lacking` says which: {missing}, {has}), or no `rows_are` at all.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = f.write_text("Path,label\\na.png,knot\\n")
    >>> m = read_manifest(f, "manifest", required=("path",))
    >>> m.column("path"), m.rows, m.first_row
    ('Path', [{'Path': 'a.png', 'label': 'knot'}], 2)
    """
    import pyarrow as pa

    csv = path.suffix.lower() != ".parquet"
    try:
        if csv:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{what} {path} cannot be read: {str(exc).splitlines()[0]}") from None
    for name in unique:
        same = [c for c in table.column_names if c.lower() == name]
        if len(same) > 1:
            raise ManifestError(f"{what} {path} has {len(same)} columns named {name} ({', '.join(same)}): keep one")
    columns = {c.lower(): c for c in table.column_names}
    missing = [c for c in required if c not in columns]
    if missing:
        has = ", ".join(table.column_names) or "none"
        raise ManifestError(f"{what} {path} " + lacking.format(missing=", ".join(missing), has=has))
    rows = table.to_pylist()
    if not rows:
        raise ManifestError(f"{what} {path} lists no {rows_are}")
    return Manifest(path, rows, columns, path.resolve().parent, 2 if csv else 0)
