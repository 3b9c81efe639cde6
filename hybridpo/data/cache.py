"""On-disk cache of tokenised examples, so a second run skips reading and tokenising.

Key: sha256 over the kind of load, every setting that shapes the examples (all of DataConfig
but the cache's own fields), the sources' fingerprints (path + size + mtime for files,
`datasets`' fingerprint otherwise), the tokenizer's fingerprint and CACHE_VERSION. Any change
gives a new file; nothing is ever updated in place. One parquet file per entry (list<int32>
columns, safe to read, unlike pickle), written to a temporary file and renamed, so a killed
writer leaves no half-written entry. The load's DataStats ride along in the file's metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

from hybridpo.data.config import DataConfig
from hybridpo.data.examples import DataStats, PreferenceExample, PromptExample

CACHE_VERSION = 2  # bump when the meaning of cached examples changes (2: a response ends at its first EOS)
NOT_IN_KEY = {"use_cache", "cache_dir", "hf_cache_dir"}  # settings that cannot change the examples


def cache_dir(cfg: DataConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "hybridpo" / "data"


def cache_key(kind: str, cfg: DataConfig, source_fingerprints: list[str], tokenizer_fp: str) -> str:
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_IN_KEY}
    material = json.dumps([CACHE_VERSION, kind, settings, source_fingerprints, tokenizer_fp], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def cache_path(kind: str, cfg: DataConfig, key: str) -> Path:
    return cache_dir(cfg) / f"{kind}-{key}.parquet"


def _table(train: list, eval_: list, stats: DataStats):
    import pyarrow as pa

    cls = type((train or eval_)[0]) if (train or eval_) else PreferenceExample
    columns: dict[str, list] = {"split": ["train"] * len(train) + ["eval"] * len(eval_)}
    for f in fields(cls):
        values = [getattr(e, f.name) for e in train + eval_]
        columns[f.name] = [json.dumps(v) for v in values] if f.name == "group" else values
    schema = pa.schema([(name, _arrow_type(name)) for name in columns])
    meta = {"stats": json.dumps(stats.to_dict()), "example": cls.__name__}
    return pa.table(columns, schema=schema).replace_schema_metadata(meta)


def _arrow_type(name: str):
    import pyarrow as pa

    return pa.list_(pa.int32()) if name.endswith("_ids") else pa.string()


def save(path: Path, train: list, eval_: list, stats: DataStats) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(_table(train, eval_, stats), tmp)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old state or the whole new file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path: Path) -> tuple[list, list, DataStats] | None:
    """The cached (train, eval, stats), or None when absent or unreadable (then rebuilt)."""
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
    except Exception:  # a foreign or damaged file: rebuild and overwrite
        return None
    meta = table.schema.metadata or {}
    cls = {"PreferenceExample": PreferenceExample, "PromptExample": PromptExample}[meta[b"example"].decode()]
    stats = DataStats.from_dict(json.loads(meta[b"stats"]))
    stats.from_cache = True
    train, eval_ = [], []
    for row in table.to_pylist():
        split = row.pop("split")
        row["group"] = json.loads(row["group"])
        (train if split == "train" else eval_).append(cls(**row))
    return train, eval_, stats
