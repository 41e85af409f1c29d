import functools

import pytest

try:
    # torch first, before any test module has run, so that a test cannot change how it imports.
    import torch  # noqa: F401
except ImportError:
    pass
except Exception as err:  # a broken torch must not stop the tests that do not need it
    import warnings

    warnings.warn(f"import torch failed: {type(err).__name__}: {err}")


@functools.lru_cache(maxsize=None)
def hopper_available() -> bool:
    try:
        from pydg.driver.cuda import device_count, device_info

        return device_count() > 0 and device_info(0).compute_capability == (9, 0)
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if hopper_available():
        return
    skip = pytest.mark.skip(reason="no sm_90 GPU found")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
