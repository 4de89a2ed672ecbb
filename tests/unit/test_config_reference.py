"""The committed configuration reference is the one the code renders, field for field."""
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.config_reference import render

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_current():
    assert COMMITTED.read_text() == render(), (
        "docs/configuration.md is out of date: run `make docs` (python -m tunelab.config_reference)")


def _leaf_keys(model, prefix):
    from tunelab.config_reference import _is_list, _model_inside
    for name, field in model.model_fields.items():
        inner = _model_inside(field.annotation)
        if inner is not None and not _is_list(field.annotation):
            yield from _leaf_keys(inner, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_every_field_is_documented_with_its_default():
    text = render()
    keys = list(_leaf_keys(RunConfig, ""))
    assert len(keys) > 100
    for key in keys:
        assert f"| `{key}` |" in text, key
    assert "| `train.lr` | float \\| null | `null` |" in text
    assert "| `eval.calibration_bins` | int | `15` |" in text
