"""`keep_heap_small`: blocks freed between batches go back to the system instead of staying in glibc's heap."""

import platform
import subprocess
import sys

import pytest

PROGRAM = """
import sys
import numpy as np
from aullava.runtime.heap import keep_heap_small
if sys.argv[1] == "small":
    assert keep_heap_small() and keep_heap_small()  # applied, and a second call is harmless
def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
blocks = [np.ones(2**18) for _ in range(60)]  # 2 MiB each: glibc's first frees raise its mmap threshold past them
del blocks
before = rss_mib()
blocks = [np.ones(2**18) for _ in range(60)]  # a batch's temporaries, now from the heap unless thresholds are fixed
del blocks[::2]  # half freed, between live ones: a heap cannot give those holes back
print(rss_mib() - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_are_returned_with_small_heap_and_kept_without():
    def kept(mode):
        done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
        return float(done.stdout.split()[-1])

    glibc, small = kept("glibc"), kept("small")
    assert glibc > 100  # 60 blocks of 2 MiB stay resident: the freed half is kept as heap
    assert small < 70  # only the 30 live blocks (60 MiB) remain
