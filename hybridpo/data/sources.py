"""Reading rows: local JSONL / JSON / parquet / CSV files, `datasets` folders, and hub names.

Every row comes with `where`, the text an error message starts with ("train.jsonl: line 7"), so
a problem found later (a missing field, a tie) still names the file and the row. Rows are
numbered from 1; for JSONL the number is the file's line number (blank lines count). Text files
are read as UTF-8 (a leading byte-order mark is skipped); other bytes are a DataError naming the
line and column, like every other bad row.

Local single files are read directly (line numbers, no copy into the `datasets` cache);
folders and hub names go through `datasets` (`load_from_disk` for a `save_to_disk` folder,
`load_dataset` otherwise), which is the path a user with the network takes for
"trl-lib/tldr" or "HuggingFaceH4/ultrafeedback_binarized".
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from hybridpo.data.examples import DataError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass(frozen=True)
class Row:
    where: str  # "path: line 7" / "path: row 7" / "name[split]: row 7"
    data: dict  # field name -> value, as stored


class Source:
    """One place rows come from. `fingerprint()` changes whenever the rows may have changed."""

    def __init__(self, spec: str, *, split: str = "train", subset: str | None = None,
                 cache_dir: str | None = None):
        if not spec:
            raise DataError("data.source is empty: give a data file, a `datasets` folder or a dataset name")
        self.spec = spec
        self.split = split
        self.subset = subset
        self.cache_dir = cache_dir
        self.path = Path(spec).expanduser()
        self._dataset = None  # the loaded `datasets.Dataset`, for folder / hub sources

    @property
    def is_file(self) -> bool:
        return self.path.is_file()

    def fingerprint(self) -> str:
        """Identity of the content: path + size + mtime for local files, `datasets`' fingerprint otherwise."""
        if self.is_file:
            st = self.path.stat()
            return f"file:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        ds = self._load_dataset()
        return f"datasets:{self.spec}:{self.subset}:{self.split}:{ds._fingerprint}"

    def rows(self) -> list[Row]:
        if self.is_file:
            suffix = self.path.suffix.lower()
            if suffix == ".jsonl":
                return _read_jsonl(self.path)
            if suffix == ".json":
                return _read_json(self.path)
            if suffix == ".parquet":
                return _read_parquet(self.path)
            if suffix == ".csv":
                return _read_csv(self.path)
            raise DataError(f"{self.path}: unsupported file type {suffix!r}; use one of {list(FILE_SUFFIXES)}")
        ds = self._load_dataset()
        label = f"{self.spec}[{self.split}]"
        return [Row(f"{label}: row {i}", dict(r)) for i, r in enumerate(ds, start=1)]

    def _load_dataset(self):
        if self._dataset is not None:
            return self._dataset
        import datasets  # late: importing `datasets` costs seconds

        try:
            if self.path.is_dir() and (
                (self.path / "dataset_dict.json").exists() or (self.path / "state.json").exists()
            ):
                ds = datasets.load_from_disk(str(self.path))
                if isinstance(ds, datasets.DatasetDict):
                    if self.split not in ds:
                        raise DataError(f"{self.spec}: no split {self.split!r}; it has {sorted(ds)}")
                    ds = ds[self.split]
            else:
                ds = datasets.load_dataset(self.spec, self.subset, split=self.split, cache_dir=self.cache_dir)
        except DataError:
            raise
        except Exception as e:  # a hub name without network, a missing split, a bad folder
            where = "folder" if self.path.is_dir() else "Hugging Face dataset name"
            raise DataError(
                f"{self.spec}: not a file; loading it as a {where} through `datasets` failed: "
                f"{type(e).__name__}: {e}"
            ) from e
        self._dataset = ds
        return ds


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object with named fields, got {type(value).__name__}")
    return value


def _read_text(path: Path) -> str:
    """The whole file as UTF-8 text; a byte that is not UTF-8 is a DataError naming its line and column
    (lines counted as text mode counts them: \\n, \\r\\n and \\r each end one)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = data[: e.start].decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {column}); "
                        "save the file as UTF-8") from None


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    for n, line in enumerate(io.StringIO(_read_text(path), newline=None), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        rows.append(Row(where, _object(value, where)))
    return rows


def _read_json(path: Path) -> list[Row]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        value = next(iter(value.values()))  # {"data": [...]} / {"rows": [...]}
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON list of row objects (or {{\"data\": [...]}}), "
                        f"got {type(value).__name__}")
    return [Row(f"{path}: row {i}", _object(v, f"{path}: row {i}")) for i, v in enumerate(value, start=1)]


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read as parquet: {e}") from e
    return [Row(f"{path}: row {i}", r) for i, r in enumerate(table.to_pylist(), start=1)]


def _read_csv(path: Path) -> list[Row]:
    rows = []
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    for i, r in enumerate(reader, start=1):
        if None in r:  # more cells than header names
            raise DataError(f"{path}: row {i} (line {reader.line_num}): more cells than the header has columns")
        rows.append(Row(f"{path}: row {i} (line {reader.line_num})", dict(r)))
    return rows
