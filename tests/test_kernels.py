"""Every kernel variant the heuristics can choose compiles with NVRTC alone, without spills."""
import math
import pathlib
import re
import shutil
import subprocess
from dataclasses import replace

import pytest

from pydg.driver.nvrtc import compile_cubin
from pydg.kernels import source
from pydg.scheduler import heuristics
from pydg.scheduler.heuristics import BLOCK_NS, EARLY_START_MIN_K_BLOCKS, MAX_BLOCK_N, candidate_plans, choose_plan, ranked_plans
from pydg.scheduler.plan import GemmPlan

SHAPES = [  # (mode, m, n, k, groups, expected_m): shapes whose candidates cover every block size and cluster form
    ("dense", 4096, 7168, 2048, 1, None),
    ("dense", 64, 2112, 7168, 1, None),
    ("contiguous", 8192, 4096, 7168, 4, None),   # long: the next tile started early where the loop allows
    ("contiguous", 8192, 4096, 2048, 4, None),   # short: not
    ("masked", 1024, 7168, 2048, 2, 512),
    ("dense", 4096, 7168, 16384, 1, None),       # long 256-row tiles over several waves
    ("dense", 1024, 2048, 7168, 1, None),        # long 256-row tiles in one wave: output staged in their stages
    ("dense", 2816, 1536, 7168, 1, None),        # exactly one wave (132 tiles): staged, and in pairs sharing A
    ("dense", 3072, 1408, 7168, 1, None),        # the same in pairs sharing B
    ("masked", 1024, 4096, 7168, 4, 256),
]


def _variants():
    # With the wide tiles (heuristics.WIDE_TILES, off until timed) among the candidates: they compile too.
    wide, heuristics.WIDE_TILES = heuristics.WIDE_TILES, True
    try:
        seen = {}
        for mode, m, n, k, groups, expected in SHAPES:
            for plan in ranked_plans(mode, m, n, k, groups, 132, expected_m=expected):
                key = (plan.mode, plan.block_m, plan.block_n, plan.cluster_size, plan.multicast, plan.output_in_stages,
                       plan.early_start, plan.split_tail)
                seen.setdefault(key, plan)
        return list(seen.values())
    finally:
        heuristics.WIDE_TILES = wide


VARIANTS = _variants()


def test_variants_cover_every_block_size_and_cluster_form():
    blocks = {(p.block_m, p.block_n) for p in VARIANTS}
    assert blocks == {(bm, bn) for bm in (64, 128, 256) for bn in BLOCK_NS if bn <= MAX_BLOCK_N[bm]}
    forms = {(p.mode, p.multicast) for p in VARIANTS}
    assert {("dense", "none"), ("dense", "a"), ("dense", "b"), ("contiguous", "a"), ("contiguous", "b"), ("masked", "a")} <= forms
    staged = {(p.mode, p.block_n, p.multicast) for p in VARIANTS if p.output_in_stages}
    assert {("dense", 64, "none"), ("dense", 128, "none"), ("dense", 128, "a"), ("dense", 128, "b"),
            ("masked", 128, "none")} <= staged
    # The heuristic starts the next tile early in the contiguous layout at long K, in every width whose
    # loop allows it (one accumulator: the widths that do not divide 128).
    early = {(p.block_m, p.block_n) for p in VARIANTS if p.early_start}
    assert early == {(bm, bn) for bm in (64, 128) for bn in BLOCK_NS if 128 % bn and bn <= MAX_BLOCK_N[bm]}
    assert all(p.mode == "contiguous" and p.num_k_blocks >= EARLY_START_MIN_K_BLOCKS for p in VARIANTS if p.early_start)
    # Staging is chosen for at most one wave of tiles, pairs for at least one: both only at exactly one.
    assert all(p.num_tiles <= p.num_sms for p in VARIANTS if p.output_in_stages)


@pytest.mark.parametrize("plan", VARIANTS, ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-{p.multicast}"
                         + ("-early" if p.early_start else "") + ("-split" if p.split_tail else ""))
def test_variant_compiles_without_spills(plan: GemmPlan, tmp_path, monkeypatch):
    monkeypatch.setenv("PYDG_CACHE_DIR", str(tmp_path))
    compiled = compile_cubin(source.sources()[source.ENTRY], source.ENTRY, source.options(plan))
    assert compiled.cubin[:4] == b"\x7fELF"
    assert compiled.ptxas.spill_stores == 0 and compiled.ptxas.spill_loads == 0, compiled.log
    assert compiled.ptxas.stack_frame == 0, compiled.log
    assert "C7508" not in compiled.log  # ptxas ignoring setmaxnreg
    assert "C7514" not in compiled.log  # ptxas serialising the wgmma pipeline
    # 384 threads need every register budget to fit in 64K registers at launch.
    assert compiled.ptxas.registers * plan.threads <= 65536


# Overlapped promotion's kernels: every tile form it applies to, and K-block counts that leave each
# tail of its 4-block chunks (K = 128 and 384: no full chunk at all).
OVERLAP_VARIANTS = [choose_plan(mode, m, n, k, groups, 132, expected_m=expected)
                    for mode, m, n, k, groups, expected in [
                        ("dense", 64, 2112, 7168, 1, None), ("dense", 64, 7168, 128, 1, None),
                        ("dense", 128, 4096, 640, 1, None), ("dense", 200, 7168, 768, 1, None),
                        ("contiguous", 8192, 2048, 7168, 4, None), ("contiguous", 8192, 2048, 384, 4, None),
                        ("masked", 256, 4096, 896, 4, 100)]]


def test_overlap_variants_are_what_they_claim():
    assert all(p.overlap_promotion for p in OVERLAP_VARIANTS)
    assert {p.k // 128 % 4 for p in OVERLAP_VARIANTS} == {0, 1, 2, 3}
    assert {p.block_m for p in OVERLAP_VARIANTS} == {64, 128}
    assert {p.mode for p in OVERLAP_VARIANTS} == {"dense", "contiguous", "masked"}


@pytest.mark.parametrize("plan", OVERLAP_VARIANTS, ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-k{p.k}")
def test_overlap_variant_compiles_without_spills_or_serialisation(plan: GemmPlan):
    _compiles_clean(plan)


def _compiles_clean(plan: GemmPlan) -> None:
    """No spills, no stack, no ignored setmaxnreg, no serialised wgmma, registers that fit at launch."""
    compiled = compile_cubin(source.sources()[source.ENTRY], source.ENTRY, source.options(plan))
    assert compiled.ptxas.spill_stores == 0 and compiled.ptxas.spill_loads == 0, compiled.log
    assert compiled.ptxas.stack_frame == 0, compiled.log
    # A wgmma group in flight across a loop's back edge makes ptxas serialise all of them (C7514).
    assert "C7514" not in compiled.log and "C7508" not in compiled.log, compiled.log
    assert compiled.ptxas.registers * plan.threads <= 65536


def test_plans_overlap_promotion_exactly_where_the_tile_allows_it():
    for plan in VARIANTS:
        assert plan.overlap_promotion == (plan.block_m <= 128 and 128 % plan.block_n == 0), plan.summary()
    wide = choose_plan("dense", 4096, 7168, 16384, 1, 132)
    assert wide.block_m == 256 and not wide.overlap_promotion
    assert wide.defines()["PYDG_OVERLAP_PROMOTION"] == "false"
    narrow = choose_plan("dense", 128, 4096, 7168, 1, 132)
    assert narrow.overlap_promotion and narrow.defines()["PYDG_OVERLAP_PROMOTION"] == "true"
    for width in (112, 192):  # a straddling width, and one too wide for three accumulator sets
        with pytest.raises(ValueError, match="overlapped promotion"):
            GemmPlan(**{**narrow.__dict__, "block_n": width}).validate()
    with pytest.raises(ValueError, match="overlapped promotion"):
        GemmPlan(**{**wide.__dict__, "overlap_promotion": True}).validate()


@pytest.mark.parametrize("plan", [replace(choose_plan("dense", 128, 4096, 1024, 1, 132), overlap_promotion=False),
                                  replace(choose_plan("dense", 64, 2112, 7168, 1, 132), overlap_promotion=False)],
                         ids=["128x4096x1024", "64x2112x7168"])
def test_plain_promotion_still_compiles(plan: GemmPlan):
    """The one-accumulator loop of narrow tiles: the GPU test compares it bit for bit with the overlapped one."""
    compiled = compile_cubin(source.sources()[source.ENTRY], source.ENTRY, source.options(plan))
    assert compiled.ptxas.spill_stores == 0 and compiled.ptxas.stack_frame == 0, compiled.log
    assert "C7514" not in compiled.log, compiled.log


def _cuobjdump() -> str | None:
    tool = shutil.which("cuobjdump")
    if tool is None:
        try:
            import nvidia.cu13  # noqa: F401  (pip wheel nvidia-cuda-cuobjdump)

            candidate = pathlib.Path(nvidia.cu13.__path__[0]) / "bin" / "cuobjdump"
            tool = str(candidate) if candidate.exists() else None
        except ImportError:
            tool = None
    return tool


def _sass(cubin_path) -> str | None:
    tool = _cuobjdump()
    if tool is None:
        return None
    return subprocess.run([tool, "-sass", str(cubin_path)], capture_output=True, text=True, check=True).stdout



def test_launch_arguments_match_the_kernels_parameters(tmp_path):
    """The launcher passes one argument per entry of source.PARAMS, each of its type's size: they must be
    the kernel's parameters in number, order and size (the cubin's EIATTR_KPARAM_INFO), or every launch
    reads shifted arguments."""
    import ctypes

    from pydg.driver.launch import PARAM_TYPES

    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not installed (pip install nvidia-cuda-cuobjdump)")
    compiled = compile_cubin(source.sources()[source.ENTRY], source.ENTRY,
                             source.options(choose_plan("dense", 4096, 7168, 2048, 1, 132)))
    path = tmp_path / "k.cubin"
    path.write_bytes(compiled.cubin)
    elf = subprocess.run([tool, "-elf", str(path)], capture_output=True, text=True, check=True).stdout
    found = {int(ordinal, 16): int(size, 16)
             for ordinal, size in re.findall(r"Ordinal\s*:\s*0x([0-9a-f]+)\s+Offset\s*:\s*0x[0-9a-f]+\s+Size\s*:\s*0x([0-9a-f]+)", elf)}
    assert sorted(found) == list(range(len(source.PARAMS))), elf[:2000]
    assert [found[i] for i in range(len(found))] == [ctypes.sizeof(PARAM_TYPES[kind]) for kind in source.PARAMS]

def _plan_sass(plan: GemmPlan, tmp_path) -> str:
    """The plan's kernel disassembled (the test skips where no cuobjdump is installed)."""
    compiled = compile_cubin(source.sources()[source.ENTRY], source.ENTRY, source.options(plan))
    path = tmp_path / "k.cubin"
    path.write_bytes(compiled.cubin)
    sass = _sass(path)
    if sass is None:
        pytest.skip("cuobjdump not installed (pip install nvidia-cuda-cuobjdump)")
    return sass


@pytest.mark.parametrize("plan", [p for p in VARIANTS if p.block_n in (128, 144)][:4],
                         ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-{p.multicast}")
def test_sass_uses_tensor_cores_and_tma(plan, tmp_path):
    sass = _plan_sass(plan, tmp_path)
    assert re.search(r"\bQGMMA\b", sass)
    assert "UTMALDG" in sass and "UTMASTG" in sass
    assert not re.search(r"\b(LDL|STL)\b", sass)


# Tiles whose columns can straddle two or three of B's 128-row scale blocks, in both loops; 128x192
# with 16 k-blocks (whole turns of its 4 stages) and 17 (one k-block with the stage at run time).
STRADDLING = [next(p for p in candidate_plans("dense", 4096, 7168, k, 1, 132)
                   if (p.block_m, p.block_n, p.cluster_size) == (bm, bn, 1))
              for bm, bn, k in ((128, 176, 2048), (128, 192, 2048), (128, 192, 2176), (64, 112, 2048),
                                (256, 112, 2048))]
STRADDLING += [replace(p, early_start=True) for p in STRADDLING]


@pytest.mark.parametrize("plan", STRADDLING, ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-k{p.k}"
                         + ("-early" if p.early_start else ""))
def test_sass_selects_scales_at_compile_time_and_issues_tma_from_one_lane(plan, tmp_path):
    """One k-loop copy per split column (fp8_gemm.cuh, with_constant), so no scale select (FSEL) is
    left in the promotion; the producer's elected lane needs no per-lane loop (BRA.U.ANY) around TMA."""
    sass = _plan_sass(plan, tmp_path)
    assert not re.search(r"\bFSEL\b", sass)
    assert "BRA.U.ANY" not in sass
    step = math.gcd(plan.block_n, 128)
    copies = len({min(128 - offset, plan.block_n) for offset in range(0, 128, step)})
    sub_blocks = 2 if plan.block_m == 256 else 1
    # The loop bodies: chunks of 4 and a tail (overlapped); one accumulator: one k-block per stage
    # where two warpgroups run (compile-time stages over whole turns of the ring), plus one k-block
    # each before and after the turns with a runtime stage (a tile started early begins at stage 1);
    # one warpgroup: two k-blocks (an odd count enters the pair half-way); one k-block where the loop
    # has more than 4 copies (its compile time). The early start adds the epilogue's first sub-block
    # of the next tile and, per copy, the rest of that tile's k-block 0.
    early = 1 if plan.early_start else 0
    if plan.overlap_promotion:
        k_blocks_per_copy = 4 + plan.num_k_blocks % 4
    elif copies > 4:
        k_blocks_per_copy = 1
    elif plan.block_m >= 128:
        k_blocks_per_copy = plan.num_stages + (2 if plan.early_start or plan.num_k_blocks % plan.num_stages else 0)
    else:
        k_blocks_per_copy = 2
    per_copy = sub_blocks * k_blocks_per_copy + early * (sub_blocks - 1)
    assert len(re.findall(r"\bQGMMA\b", sass)) == (copies * per_copy + early) * 4



def _split_plan(m: int, n: int, k: int, block_n: int, num_sms: int) -> GemmPlan:
    plan = next(p for p in candidate_plans("dense", m, n, k, 1, 132) if (p.block_m, p.block_n, p.cluster_size) == (256, block_n, 1))
    return replace(plan, num_sms=num_sms, split_tail=True)


# The split tail (GemmPlan.split_tail, off in the heuristic until a GPU has timed it) on every dense
# 256-row variant: each tile width and cluster form.
SPLIT_VARIANTS = [replace(p, split_tail=True) for p in VARIANTS
                  if p.allows_split_tail and p.num_tiles % p.num_sms]


def test_split_variants_cover_every_256_row_width_and_cluster_form():
    assert {p.block_n for p in SPLIT_VARIANTS} == set(BLOCK_NS) & set(range(16, MAX_BLOCK_N[256] + 1))
    assert {p.multicast for p in SPLIT_VARIANTS} == {"none", "a", "b"}


@pytest.mark.parametrize("plan", SPLIT_VARIANTS, ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-{p.multicast}")
def test_split_variant_compiles_without_spills(plan: GemmPlan):
    compiled = compile_cubin(source.sources()[source.ENTRY], source.ENTRY, source.options(plan))
    assert compiled.ptxas.spill_stores == 0 and compiled.ptxas.spill_loads == 0, compiled.log
    assert compiled.ptxas.stack_frame == 0 and compiled.ptxas.local_bytes == 0, compiled.log
    assert "C7514" not in compiled.log and "C7508" not in compiled.log, compiled.log


@pytest.mark.parametrize("plan", [replace(choose_plan("dense", 4096, 32768, 512, 1, 132), split_tail=True),
                                  _split_plan(2048, 7168, 640, 112, 60)],
                         ids=lambda p: f"{p.block_m}x{p.block_n}-k{p.k}")
def test_split_tail_adds_one_half_k_block_per_loop_copy(plan, tmp_path):
    """The split tail's half tiles run a loop of their own (one sub-block per k-block) in each k-loop copy
    (one per split column); the whole tiles' loops are the plan's without the split."""
    assert plan.split_tail
    split, whole = _plan_sass(plan, tmp_path), _plan_sass(replace(plan, split_tail=False), tmp_path)
    copies = len({min(128 - offset, plan.block_n) for offset in range(0, 128, math.gcd(plan.block_n, 128))})
    assert len(re.findall(r"\bQGMMA\b", split)) == len(re.findall(r"\bQGMMA\b", whole)) + copies * 4
    assert not re.search(r"\b(LDL|STL|FSEL)\b", split) and "BRA.U.ANY" not in split

# The early start (GemmPlan.early_start) on one variant per layout, row count, cluster form and output
# staging, in widths that divide B's scale blocks and ones that straddle them (one loop copy per split).
EARLY_VARIANTS = list({(p.mode, p.block_m, p.multicast, p.output_in_stages, p.block_n in (112, 176)):
                       replace(p, early_start=True, split_tail=False)
                       for p in VARIANTS if p.allows_early_start and p.block_n in (48, 112, 128, 176, 192)}.values())


def test_early_variants_cover_every_form():
    forms = {(p.mode, p.block_m, p.output_in_stages) for p in EARLY_VARIANTS}
    rows = {"dense": (64, 128, 256), "contiguous": (64, 128), "masked": (64, 128, 256)}  # contiguous: its alignment
    assert {(mode, bm, False) for mode, bms in rows.items() for bm in bms} <= forms
    assert ("dense", 256, True) in forms and ("masked", 256, True) in forms
    assert {p.multicast for p in EARLY_VARIANTS} == {"none", "a", "b"}


@pytest.mark.parametrize("plan", EARLY_VARIANTS,
                         ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-{p.multicast}" + ("-staged" if p.output_in_stages else ""))
def test_early_variant_compiles_without_spills(plan: GemmPlan):
    compiled = compile_cubin(source.sources()[source.ENTRY], source.ENTRY, source.options(plan))
    assert compiled.ptxas.spill_stores == 0 and compiled.ptxas.spill_loads == 0, compiled.log
    assert compiled.ptxas.stack_frame == 0, compiled.log
    assert "C7514" not in compiled.log, compiled.log


@pytest.mark.parametrize("plan", [replace(choose_plan("dense", 4096, 32768, 512, 1, 132), split_tail=False),
                                  replace(choose_plan("contiguous", 32768, 4096, 7168, 8, 132), early_start=False)],
                         ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}")
def test_early_start_issues_the_next_tiles_mma_among_the_epilogue_stores(plan, tmp_path):
    """The point of the early start: in the epilogue, a wgmma group is issued before the last
    sub-block's stmatrix stores (after the first sub-block's, for 256-row tiles) and waited for only
    after the TMA stores are issued. The plan without it issues none there."""
    assert not plan.early_start and plan.allows_early_start

    def epilogue(sass: str) -> list[str]:
        """The MMA and store instructions from the k-loop's last wait to the wait after the TMA stores."""
        ops = re.findall(r"\b(QGMMA|STSM|UTMASTG|WARPGROUP\.DEPBAR)\b", sass)
        first_store, last_store = ops.index("STSM"), len(ops) - 1 - ops[::-1].index("UTMASTG")
        loop_wait = max(i for i in range(first_store) if ops[i] == "WARPGROUP.DEPBAR")
        return ops[loop_wait + 1:last_store + 2]

    early = epilogue(_plan_sass(replace(plan, early_start=True, split_tail=False), tmp_path))
    before = (2 if plan.block_m == 256 else 1) - 1
    stores_before = before * plan.block_n // 16
    assert early[:stores_before + 4] == ["STSM"] * stores_before + ["QGMMA"] * 4, early
    assert "QGMMA" not in early[stores_before + 4:] and early[-1] == "WARPGROUP.DEPBAR", early
    assert "QGMMA" not in epilogue(_plan_sass(plan, tmp_path))


# B's loads marked evict-first in L2 (GemmPlan.b_evict_first): every form of B's load (alone, in pairs
# sharing A, multicast to a pair sharing B, and a contiguous pair's own B beside the multicast one).
B_EVICT_VARIANTS = list({(p.mode, p.block_m, p.multicast): replace(p, b_evict_first=True)
                         for p in VARIANTS if p.block_n in (64, 128)}.values())


def test_b_evict_variants_cover_every_load_form():
    assert {(p.mode, p.multicast) for p in B_EVICT_VARIANTS} >= {
        ("dense", "none"), ("dense", "a"), ("dense", "b"), ("contiguous", "b"), ("masked", "none")}


@pytest.mark.parametrize("plan", B_EVICT_VARIANTS, ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-{p.multicast}")
def test_b_evict_variant_compiles_without_spills(plan: GemmPlan):
    _compiles_clean(plan)


@pytest.mark.parametrize("plan", [p for p in B_EVICT_VARIANTS if p.block_m == 128 and p.mode != "masked"],
                         ids=lambda p: f"{p.mode}-{p.block_m}x{p.block_n}-{p.multicast}")
def test_b_evict_first_hints_only_the_loads_of_b(plan, tmp_path):
    """The hinted TMA loads (UTMALDG with a policy operand, desc[UR]) are B's: one load site, two in a
    contiguous pair sharing B (the multicast one and a CTA's own); none without the hint, and the
    math warps' code is unchanged."""
    hinted = _plan_sass(plan, tmp_path)
    plain = _plan_sass(replace(plan, b_evict_first=False), tmp_path)
    loads = re.compile(r"UTMALDG[.\w]*\s[^;]*")
    with_policy = [load for load in loads.findall(hinted) if "desc[" in load]
    b_sites = 2 if (plan.mode, plan.multicast) == ("contiguous", "b") else 1
    assert len(with_policy) == b_sites, with_policy
    assert any("MULTICAST" in load for load in with_policy) == (plan.multicast == "b"), with_policy
    assert not [load for load in loads.findall(plain) if "desc[" in load]
    assert len(loads.findall(hinted)) == len(loads.findall(plain))
    assert len(re.findall(r"\bQGMMA\b", hinted)) == len(re.findall(r"\bQGMMA\b", plain))


def test_wgmma_header_is_generated_one():
    import importlib.util
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "gen_wgmma.py"
    spec = importlib.util.spec_from_file_location("gen_wgmma", script)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (source.KERNEL_DIR / "wgmma_fp8.cuh").read_text() == gen.render()


# Kernel changes waiting to be timed on a GPU (variants/README.md): each must still apply to the
# package's sources and compile without spills, on plans of each layout that scripts/gpu_check.sh times
# (the contiguous ones with and without the early start).
PATCHES = sorted((pathlib.Path(__file__).resolve().parents[1] / "variants").glob("*.patch"))
PATCH_PLANS = [choose_plan("dense", 4096, 7168, 16384, 1, 132), choose_plan("masked", 256, 7168, 2048, 4, 132, expected_m=256),
               choose_plan("dense", 64, 2112, 7168, 1, 132), choose_plan("dense", 4096, 32768, 512, 1, 132),
               choose_plan("contiguous", 32768, 4096, 7168, 4, 132), choose_plan("contiguous", 32768, 7168, 2048, 4, 132)]


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.stem)
def test_waiting_kernel_change_applies_and_compiles_without_spills(patch, tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not found (the patch is applied with git apply)")
    folder = tmp_path / "kernels"
    shutil.copytree(source.KERNEL_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    subprocess.run(["git", "apply", "-p1", "--unsafe-paths", f"--directory={folder}", str(patch)],
                   cwd=tmp_path, check=True, capture_output=True)
    changed = [p.name for p in folder.iterdir() if p.read_text() != (source.KERNEL_DIR / p.name).read_text()]
    assert changed, f"{patch.name} changes nothing"
    for plan in PATCH_PLANS:
        compiled = compile_cubin((folder / source.ENTRY).read_text(), source.ENTRY,
                                 [f"{source.INCLUDE_OPTION}{folder}", *source.content_options(plan)])
        assert compiled.ptxas.spill_stores == 0 and compiled.ptxas.spill_loads == 0, (plan.summary(), compiled.log)
        assert compiled.ptxas.stack_frame == 0 and compiled.ptxas.local_bytes == 0, (plan.summary(), compiled.log)
        assert "C7514" not in compiled.log, compiled.log
