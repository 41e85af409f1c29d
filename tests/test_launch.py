"""The ctypes launch structures match cuda.h's layout (the driver reads them as raw memory)."""
import ctypes

from cuda.bindings import driver as cu

from pydg.driver import launch


def test_launch_config_layout_matches_cuda_h():
    fields = {name: getattr(launch.LaunchConfig, name).offset for name, _ in launch.LaunchConfig._fields_}
    assert fields == {"grid": 0, "block": 12, "shared_mem_bytes": 24, "stream": 32, "attrs": 40, "num_attrs": 48}
    assert ctypes.sizeof(launch.LaunchConfig) == 56


def test_launch_attribute_layout_matches_cuda_h():
    assert launch.LaunchAttribute.value.offset == 8
    assert ctypes.sizeof(launch.LaunchAttribute) == 72


def test_cluster_attribute_id_matches_the_bindings():
    assert launch.CLUSTER_DIMENSION_ATTRIBUTE == int(cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION)


def test_config_is_built_without_a_gpu(monkeypatch):
    monkeypatch.setattr(launch, "_driver_launch", lambda: None)
    kl = launch.KernelLaunch(0x1234, (132, 1, 1), (384, 1, 1), 1000, 2, ("pointer", "u32", "tensor_map"))
    assert tuple(kl.config.grid) == (132, 1, 1) and tuple(kl.config.block) == (384, 1, 1)
    assert kl.config.shared_mem_bytes == 1000 and kl.config.num_attrs == 1
    assert kl.attrs[0].id == launch.CLUSTER_DIMENSION_ATTRIBUTE and tuple(kl.attrs[0].value[:3]) == (2, 1, 1)
    kl.set_value(0, 0xDEADBEEF00)
    kl.set_value(1, 7)
    addresses = [kl.addresses[i] for i in range(3)]
    assert ctypes.c_uint64.from_address(addresses[0]).value == 0xDEADBEEF00
    assert ctypes.c_uint32.from_address(addresses[1]).value == 7
    single = launch.KernelLaunch(0x1234, (1, 1, 1), (256, 1, 1), 0, 1, ("u32",))
    assert single.config.num_attrs == 0
