"""The AC-ODM agent tests run on one torch thread (tests.helpers.one_torch_thread)."""

from tests.helpers import one_torch_thread  # noqa: F401 (autouse fixture for this folder)
