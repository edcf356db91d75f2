"""Machine-code resources of CUDA kernels (spingpu.kernels.ptx): the assembler's report read from
hand-written PTX, the register-file occupancy rule, and check_kernels' launch check."""

import numpy as np
import pytest

from spingpu import cuda_kernels
from spingpu.kernels.ptx import Resources, assemble

PTX = """.version 8.0
.target {target}
.address_size 64

.visible .entry big(.param .u64 out)
{{
\t.reg .b64 %rd<3>;
\t.reg .f64 %fd<2>;
\t.shared .align 8 .b8 buf[{shared}];
\tld.param.u64 %rd1, [out];
\tcvta.to.global.u64 %rd2, %rd1;
\tld.shared.f64 %fd1, [buf+8];
\t{store} [%rd2], %fd1;
\tret;
}}
"""


def ptx(shared, target="sm_90", store="st.global.f64"):
    return PTX.format(target=target, shared=shared, store=store)


@pytest.fixture(autouse=True, scope="module")
def _nvjitlink():
    pytest.importorskip("cuda.bindings.nvjitlink")


def test_assemble_reads_the_shared_memory_of_handwritten_ptx():
    shared = 8 * int(np.random.default_rng().integers(2, 6144))
    on_80 = assemble(ptx(shared, "sm_80"), (8, 0))
    assert on_80 == Resources(on_80.registers, 0, shared, 0) and 1 <= on_80.registers <= 16
    assert assemble(ptx(shared), (9, 0)).shared_bytes == shared + 1024  # sm_90 reserves 1 KiB per block


@pytest.mark.parametrize("text, cc, phrase", [
    (ptx(49160), (9, 0), "Entry function 'big' uses too much shared data (0xc008 bytes, 0xc000 max)"),
    (ptx(64, store="st.globl.f64"), (9, 0), "line 13; error : "),
    (ptx(64), (8, 0), "SM version specified by .target is higher"),
], ids=["shared", "typo", "target"])
def test_an_assembler_error_is_one_line_with_its_message(text, cc, phrase):
    with pytest.raises(RuntimeError) as err:
        assemble(text, cc)
    message = str(err.value)
    assert message.startswith(f"assembling for sm_{cc[0]}{cc[1]}: ") and phrase in message and "\n" not in message


# blocks by cudaOccMaxBlocksPerSMRegsLimit (cuda_occupancy.h), worked by hand: a warp takes 32 r rounded
# up to 256; a sub-partition holds 16,384 // that warps; blocks = 4 x those // warps per block
@pytest.mark.parametrize("registers, threads, blocks", [
    (182, 128, 2),  # 5,824 -> 5,888 per warp; 2 warps per sub-partition; 8 // 4
    (168, 128, 3),  # 5,376 per warp; 3 per sub-partition; 12 // 4
    (169, 128, 2),  # 5,408 -> 5,632 per warp; 2 per sub-partition
    (128, 128, 4),
    (32, 128, 16),
    (1, 32, 256),  # 256 per warp: the register file's bound, above the 32 blocks an SM schedules
    (40, 96, 16),  # 1,280 per warp; 12 per sub-partition; 48 // 3
    (182, 64, 4),  # 2 per sub-partition; 8 // 2 (one warp short of 3 blocks if the SM were one pool)
    (64, 1024, 1),
    (65, 1024, 0),  # 2,080 -> 2,304 per warp x 32 warps = 73,728 > 65,536
    (120, 544, 0),  # 3,840 per warp x 17 warps fits, but the launch check rounds up to 20 warps
    (255, 256, 1),
])
def test_blocks_per_sm_by_registers(registers, threads, blocks):
    assert Resources(registers, 0, 0, 0).blocks_per_sm(threads) == blocks


def test_a_block_too_big_for_the_register_file_is_named(monkeypatch):
    monkeypatch.setattr(cuda_kernels, "catalog", lambda: [cuda_kernels.KernelSpec("greedy", None, "()", 1024)])
    monkeypatch.setattr(cuda_kernels, "nvjitlink_missing", lambda: None)
    monkeypatch.setattr(cuda_kernels, "_compile",
                        lambda i, cc, asm: cuda_kernels.Compiled("greedy", 1024, 100, Resources(65, 0, 0, 0)))
    with pytest.raises(RuntimeError) as err:
        cuda_kernels.check_kernels("sm_90", report=lambda line: None)
    assert str(err.value) == ("kernel greedy cannot launch 1024 threads per block on sm_90: 65 registers per thread "
                              "x 1024 threads need more than the 65,536 registers of a block (warps rounded up to a "
                              "multiple of 4)")


def test_without_nvjitlink_the_check_says_so_and_compiles_ptx_only(monkeypatch):
    seen, lines = [], []
    monkeypatch.setattr(cuda_kernels, "catalog", lambda: [cuda_kernels.KernelSpec("k", None, "()", 128)])
    monkeypatch.setattr(cuda_kernels, "nvjitlink_missing", lambda: "ModuleNotFoundError: No module named 'cuda.bindings'")

    def compile_only(i, cc, asm):
        seen.append(asm)
        return cuda_kernels.Compiled("k", 128, 1234)

    monkeypatch.setattr(cuda_kernels, "_compile", compile_only)
    assert cuda_kernels.check_kernels("sm_90", report=lines.append) == 1
    assert seen == [False]
    assert lines == ["  (PTX only, not assembled: nvJitLink is not usable: ModuleNotFoundError: No module named "
                     "'cuda.bindings')",
                     f"  {'k':<{cuda_kernels.NAME_WIDTH}}     1,234 bytes of PTX"]


def test_nvjitlink_whose_library_does_not_load_counts_as_missing(monkeypatch):
    from cuda.bindings import nvjitlink

    assert cuda_kernels.nvjitlink_missing() is None

    def no_library():
        raise RuntimeError("libnvJitLink.so.13: cannot open shared object file")

    monkeypatch.setattr(nvjitlink, "version", no_library)
    assert cuda_kernels.nvjitlink_missing() == "RuntimeError: libnvJitLink.so.13: cannot open shared object file"


def test_a_log_without_a_resource_line_still_counts_as_assembled(monkeypatch):
    from cuda.bindings import nvjitlink

    def old_style_log(handle, buf):  # an nvJitLink that words its log differently
        text = b"ptxas info : Used 8 registers\n"
        buf[:len(text)] = text

    monkeypatch.setattr(nvjitlink, "get_info_log_size", lambda handle: 31)
    monkeypatch.setattr(nvjitlink, "get_info_log", old_style_log)
    assert assemble(ptx(64), (9, 0)) is None
    done = cuda_kernels.Compiled("k", 128, 1234, None, assembled=True)
    assert done.line() == f"  {'k':<{cuda_kernels.NAME_WIDTH}}     1,234 bytes of PTX; assembled (nvJitLink's log gave no resource line to read)"
    lines = []
    monkeypatch.setattr(cuda_kernels, "catalog", lambda: [cuda_kernels.KernelSpec("k", None, "()", 128)] * 2)
    monkeypatch.setattr(cuda_kernels, "nvjitlink_missing", lambda: None)
    monkeypatch.setattr(cuda_kernels, "_compile", lambda i, cc, asm: done)
    assert cuda_kernels.check_kernels("sm_90", report=lines.append) == 2
    assert lines[-1] == "  (2 kernels assembled without a register report: their launch check was skipped)"


def test_kernels_compile_under_a_numpy_without_row_stack(compiler_python):
    """NumPy 2.5 removed ``row_stack``, which numba-cuda 0.30.4 names at its first compilation
    (spingpu.kernels.cuda_setup): a fresh process without it still compiles a kernel to PTX, and
    the alias is back."""
    code = ("import numpy as np\n"
            "np.__dict__.pop('row_stack', None)\n"
            "from spingpu.kernels import batched_cuda, ptx\n"
            "text = ptx.compile_ptx(batched_cuda.network_mean, '(float64[:, ::1], float64[::1])')\n"
            "print('.entry' in text, np.row_stack is np.vstack)")
    out = compiler_python("-c", code)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True"]
