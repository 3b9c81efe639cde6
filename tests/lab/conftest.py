"""The lab's tensors are tiny; run its tests on one intra-op thread (as `hybridpo lab` does) and
restore the setting afterwards so other tests are unaffected. Module scope and autouse, so it is
in place before the module-scoped fixtures that run the experiments."""

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
