import pytest
import torch

from ddpm_helpers import get_device, quick_mode


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_quick_mode_on(monkeypatch, value):
    monkeypatch.setenv("DDPM_QUICK", value)
    assert quick_mode() is True


@pytest.mark.parametrize("value", ["0", "false", "No", ""])
def test_quick_mode_off(monkeypatch, value):
    monkeypatch.setenv("DDPM_QUICK", value)
    assert quick_mode() is False


def test_quick_mode_off_when_unset(monkeypatch):
    monkeypatch.delenv("DDPM_QUICK", raising=False)
    assert quick_mode() is False


def test_quick_mode_rejects_unknown_value_and_names_the_fix(monkeypatch):
    monkeypatch.setenv("DDPM_QUICK", "fast")
    with pytest.raises(ValueError, match="set it to 1"):
        quick_mode()


def test_get_device_falls_back_to_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
