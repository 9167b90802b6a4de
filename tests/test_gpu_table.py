"""One table of GPU peak figures serves MFU and the heads' roofline; device names map onto it."""

from __future__ import annotations

import pytest

from world_model.flops import GPUS, gpu_by_name


@pytest.mark.parametrize("device_name, key", [
    ("NVIDIA H100 80GB HBM3", "h100"),
    ("NVIDIA H100 PCIe", "h100_pcie"),
    ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-80GB", "a100"),
    ("NVIDIA GeForce RTX 4090", "rtx4090"),
])
def test_device_names_map_to_their_row(device_name, key):
    assert gpu_by_name(device_name) is GPUS[key]


def test_an_unknown_card_has_no_peak():
    """MFU is left out rather than computed against another card's peak."""
    assert gpu_by_name("NVIDIA GeForce GTX 1080") is None


def test_the_pcie_h100_is_not_read_as_the_sxm_part():
    assert GPUS["h100_pcie"].peak_tflops == 756.0 and GPUS["h100"].peak_tflops == 989.0
    assert GPUS["h200"].bandwidth > GPUS["h100"].bandwidth
