"""scripts/sass_ops.py folds nvdisasm's listing into an op stream (runs of one opcode on one line,
predicated instructions by their opcode), scripts/sass_digest.py tells which benchmarked kernels a
change altered, and scripts/shapes.py reads the scripts' SHAPE arguments."""
import pathlib
import sys

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import sass_digest  # noqa: E402
import sass_ops  # noqa: E402
from shapes import shape_of  # noqa: E402

SASS = """
        .text.kernel:
        /*0cd0*/                   WARPGROUP.ARRIVE ;                                 /* 0x000000000000781c */
        /*0ce0*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR12], RZ, !UPT ; /* 0x0 */
        /*0cf0*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR16], R24 ; /* 0x0 */
        /*0d00*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;                    /* 0x0 */
        /*0d10*/                   FFMA R1, R2, R3, R1 ;                              /* 0x0 */
        /*0d20*/              @!P0 FFMA R4, R5, R6, R4 ;                              /* 0x0 */
        /*0d30*/                   FFMA R7, R8, R9, R7 ;                              /* 0x0 */
        /*10000*/             @!P1 BRA `(.L_x_3) ;                                    /* 0x0 */
"""


def test_runs_fold_and_predicates_do_not_hide_the_opcode():
    assert sass_ops.folded(SASS) == [
        "0cd0 WARPGROUP.ARRIVE",
        "0ce0 QGMMA.64x128x32.F32.E4M3.E4M3 x2",
        "0d00 WARPGROUP.DEPBAR.LE gsb0, 0x0",
        "0d10 FFMA x3",
        "10000 @!P1 BRA `(.L_x_3)",
    ]


def test_shapes_give_choose_plans_arguments():
    assert shape_of("4096,7168,16384") == ("dense", (4096, 7168, 16384, 1, None))
    assert shape_of("contiguous:8,4096,4096,7168") == ("contiguous", (32768, 4096, 7168, 8, None))
    assert shape_of("masked:4,256,7168,2048") == ("masked", (256, 7168, 2048, 4, 256))


def test_sass_digest_ignores_addresses_and_parameter_offsets_but_not_instructions():
    moved = SASS.replace("/*0cd0*/", "/*0ab0*/").replace("/*10000*/", "/*20000*/")
    assert sass_digest.sass_digest(moved) == sass_digest.sass_digest(SASS)
    with_params = SASS.replace("FFMA R7, R8, R9, R7", "FFMA R7, R8, c[0x0][0x210], R7")
    assert sass_digest.sass_digest(with_params) == sass_digest.sass_digest(with_params.replace("0x210", "0x390"))
    assert sass_digest.sass_digest(SASS.replace("R9, R7", "R10, R7")) != sass_digest.sass_digest(SASS)
    assert sass_digest.sass_digest(SASS.replace("!P0", "P0")) != sass_digest.sass_digest(SASS)


def test_sass_digest_covers_every_benchmark_shape_once_and_names_what_changed():
    from pydg import bench

    shapes = dict(sass_digest.benchmark_shapes())
    assert len(shapes) == len(bench.DENSE_SHAPES) + len(bench.EXTRA_SHAPES) + 1 + 4 + 6  # 128 x 7168 x 2048 is in both
    assert shapes["masked:4,256,4096,7168"] == ("masked", 256, 4096, 7168, 4, 256)
    assert shapes["contiguous:8,4096,7168,2048"] == ("contiguous", 32768, 7168, 2048, 8, None)
    assert shapes["1,256,128"] == ("dense", 1, 256, 128, 1, None)
    before = {"nvrtc": "x", "shapes": {"a": {"plan": "p", "sass": "1"}, "b": {"plan": "p", "sass": "1"},
                                       "c": {"plan": "p", "sass": "1"}}}
    now = {"nvrtc": "x", "shapes": {"a": {"plan": "p", "sass": "1"}, "b": {"plan": "q", "sass": "1"},
                                    "c": {"plan": "p", "sass": "2"}, "d": {"plan": "p", "sass": "1"}}}
    assert sass_digest.compare(before, now) == ["b: plan changed: p -> q", "c: SASS changed (p)", "d: only now"]
    assert sass_digest.compare(before, before) == []
