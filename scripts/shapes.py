"""The SHAPE arguments the scripts take, without torch: M,N,K (dense), contiguous:G,M,N,K (G experts of M
rows each) and masked:G,M,N,K (G groups of M_max = M rows, every group full)."""


def shape_of(spec: str):
    """(mode, plan arguments (m, n, k, groups, expected_m)) of a SHAPE argument, as choose_plan takes them."""
    mode, _, dims = spec.rpartition(":")
    mode = mode or "dense"
    if mode == "dense":
        m, n, k = map(int, dims.split(","))
        return mode, (m, n, k, 1, None)
    groups, m, n, k = map(int, dims.split(","))
    return mode, ((groups * m if mode == "contiguous" else m), n, k, groups, m if mode == "masked" else None)
