import os
import platform

import pytest
import torch

from trainers.common import release_freed_memory


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_freed_memory_returns_fragmented_cpu_memory_to_the_os():
    # 2,000 tensors of 64 KiB (below glibc's mmap threshold, so they live in its heap); freeing every
    # other one leaves ~62 MiB of free chunks between live ones, which glibc keeps resident
    tensors = [torch.ones(16 * 1024) for _ in range(2000)]
    del tensors[::2]
    before = resident_mb()
    assert release_freed_memory(torch.device("cpu")) is True
    after = resident_mb()
    assert before - after > 30, f"resident memory {before:.0f} MiB -> {after:.0f} MiB"
    assert all(float(t.sum()) == 16 * 1024 for t in tensors)  # the live tensors are untouched


def test_release_freed_memory_does_nothing_for_gpu_tensors():
    assert release_freed_memory(torch.device("cuda")) is False
