"""The scripts keep freed memory in the process (src/allocator.py): fewer page faults, user settings respected."""
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import src.cli
from src.allocator import keep_freed_memory, user_has_chosen

REPO = Path(__file__).resolve().parents[2]

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds exist in glibc only")


@pytest.mark.parametrize("environ, why", [
    ({}, None),
    ({"PATH": "/usr/bin", "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"}, None),
    ({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
    ({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, "GLIBC_TUNABLES"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "LD_PRELOAD"),
    ({"LD_PRELOAD": "/opt/lib/libtcmalloc_minimal.so.4"}, "LD_PRELOAD"),
])
def test_the_users_own_allocator_settings_are_recognised(environ, why):
    assert user_has_chosen(environ) == why


def test_nothing_is_changed_where_the_user_chose_the_settings():
    assert keep_freed_memory({"MALLOC_MMAP_THRESHOLD_": "131072"}) is False


def test_only_a_command_line_run_changes_the_allocator(monkeypatch):
    calls = []
    monkeypatch.setattr(src.cli, "keep_freed_memory", lambda: calls.append(True))
    assert src.cli.run_main(lambda argv: None, []) == 0
    assert calls == []  # a test or notebook calling a script's main in-process keeps its allocator
    assert src.cli.run_main(lambda argv: None) == 0
    assert calls == [True]


FAULTS = """
import resource, sys, torch
sys.path.insert(0, {repo!r})
from src.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else None
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 << 20)  # 64 MiB, every page written
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(tuned, sum(faults[15:]))
"""


@pytest.mark.slow
@glibc_only
def test_a_freed_block_is_reused_without_new_page_faults():
    """30 allocations of 64 MiB (16384 pages each), faults counted over the last 15: by default each is a
    fresh mmap whose pages all fault again (15 x 16384); with the raised thresholds the freed block stays in
    the heap and is reused (glibc may place the first few aligned blocks above the freed ones, so the first
    half is a warm-up)."""
    code = FAULTS.format(repo=str(REPO))
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    runs = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        flag, faults = out.stdout.split()
        runs[mode] = int(faults)
        if mode == "tuned":
            assert flag == "True"
    pages = (64 << 20) // 4096
    assert runs["default"] >= 14 * pages  # the test has teeth: without the change every block faults again
    assert runs["tuned"] < 2 * pages
