"""tests/fast imports its shared builders from test_varlen_attention (this folder on sys.path)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
