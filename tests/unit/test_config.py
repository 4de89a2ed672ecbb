"""Configuration: defaults, YAML, key=value overrides, and one-sentence errors that name the key."""
import pytest

from tunelab.config import ALL_PII_TYPES, RunConfig, apply_override, config_to_dict, load_config
from tunelab.errors import TunelabError


def error_of(path=None, overrides=None) -> str:
    with pytest.raises(TunelabError) as info:
        load_config(path, overrides)
    message = str(info.value)
    # a single sentence: one line, one full stop at the end, no question mark before it
    assert "\n" not in message
    assert message.endswith(".") and not message.endswith("..") and not message.endswith("?.")
    return message


def test_defaults():
    cfg = load_config()
    data = cfg.data
    assert data.format == "auto"
    assert (data.text_column, data.label_column, data.group_column, data.labels) == ("text", "label", None, None)
    assert data.max_chars == 100_000 and data.max_tokens is None and data.tokenizer is None
    assert data.clean.nfc and data.clean.whitespace and not data.clean.strip_html
    assert data.pii.mode == "redact" and data.pii.types == ALL_PII_TYPES and data.pii.phone_region == "US"
    assert data.dedup.exact and data.dedup.near and data.dedup.threshold == 0.8
    assert (data.dedup.num_perm, data.dedup.shingle_words) == (128, 3)
    assert (data.split.val, data.split.test, data.split.seed) == (0.1, 0.1, 0)
    assert load_config() == RunConfig()


def test_every_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)
    walk(RunConfig)


def test_load_from_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  format: classification\n  labels: [pos, neg]\n"
                    "  pii:\n    mode: drop\n    types: [email]\n"
                    "  split:\n    val: 0.2\n    seed: 7\n")
    cfg = load_config(path)
    assert cfg.data.format == "classification"
    assert cfg.data.labels == ["pos", "neg"]
    assert cfg.data.pii.mode == "drop" and cfg.data.pii.types == ["email"]
    assert (cfg.data.split.val, cfg.data.split.test, cfg.data.split.seed) == (0.2, 0.1, 7)
    assert load_config(str(path)) == cfg  # str paths too


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_overrides_parse_numbers_lists_and_booleans():
    cfg = load_config(overrides=["data.split.seed=3", "data.labels=[a,b]", "data.dedup.near=false",
                                 "data.clean.strip_html=true", "data.dedup.threshold=0.9",
                                 "data.pii.phone_region=GB", "data.tokenizer="])
    assert cfg.data.split.seed == 3
    assert cfg.data.labels == ["a", "b"]
    assert cfg.data.dedup.near is False and cfg.data.clean.strip_html is True
    assert cfg.data.dedup.threshold == 0.9
    assert cfg.data.pii.phone_region == "GB"
    assert cfg.data.tokenizer is None


def test_overrides_apply_on_top_of_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  split:\n    seed: 7\n    val: 0.2\n")
    cfg = load_config(path, ["data.split.seed=3"])
    assert cfg.data.split.seed == 3 and cfg.data.split.val == 0.2


def test_later_override_wins():
    assert load_config(overrides=["data.split.seed=1", "data.split.seed=2"]).data.split.seed == 2


def test_apply_override_builds_nested_dicts():
    raw = {}
    apply_override(raw, "data.split.seed=3")
    apply_override(raw, "data.labels=[x, y]")
    assert raw == {"data": {"split": {"seed": 3}, "labels": ["x", "y"]}}


def test_unknown_nested_key_suggests_the_closest():
    message = error_of(overrides=["data.pii.mod=drop"])
    assert "unknown key 'data.pii.mod'" in message
    assert "'data.pii.mode'" in message
    assert message.startswith("command line: ")


def test_unknown_top_level_key_suggests_the_closest():
    message = error_of(overrides=["dat.format=chat"])
    assert "unknown key 'dat'" in message and "'data'" in message


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  split:\n    sed: 3\n")
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert "unknown key 'data.split.sed'" in message and "'data.split.seed'" in message


def test_unknown_key_with_nothing_close_lists_the_valid_ones():
    message = error_of(overrides=["data.pii.zzzzqq=1"])
    assert "unknown key 'data.pii.zzzzqq'" in message
    assert "mode, types, phone_region" in message


@pytest.mark.parametrize("override, key", [
    ("data.split.seed=abc", "data.split.seed"),
    ("data.format=xml", "data.format"),
    ("data.split.val=1.5", "data.split.val"),
    ("data.max_chars=0", "data.max_chars"),
    ("data.labels=a", "data.labels"),
    ("data.dedup.threshold=0", "data.dedup.threshold"),
    ("data.pii.types=[email,passport]", "data.pii.types"),
])
def test_type_errors_name_the_dotted_key(override, key):
    message = error_of(overrides=[override])
    assert f"'{key}" in message and "is invalid" in message


def test_type_error_shows_the_bad_value():
    assert "(got 'abc')" in error_of(overrides=["data.split.seed=abc"])


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (0.6, 0.5), (0.9, 0.1)])
def test_val_plus_test_of_one_or_more_is_rejected(val, test):
    message = error_of(overrides=[f"data.split.val={val}", f"data.split.test={test}"])
    assert "'data.split'" in message
    assert "split.val + split.test must be below 1" in message
    assert "Value error" not in message


def test_val_plus_test_below_one_is_accepted():
    cfg = load_config(overrides=["data.split.val=0.45", "data.split.test=0.45"])
    assert (cfg.data.split.val, cfg.data.split.test) == (0.45, 0.45)


@pytest.mark.parametrize("override", ["data.split.seed", "=3", " =3", ""])
def test_malformed_override(override):
    message = error_of(overrides=[override])
    assert "is not of the form key.sub=value" in message
    assert "data.split.seed=3" in message  # shows how to write one


def test_override_below_a_value_is_rejected():
    message = error_of(overrides=["data.split.seed=3", "data.split.seed.x=1"])
    assert "'seed'" in message and "not a section" in message


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = error_of(path)
    assert message == f"{path}: config file not found; check the path."


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  format: chat\n bad: indent\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: the YAML does not parse")
    assert "fix the syntax at that line" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    assert "must be a mapping of sections" in error_of(path)


def test_errors_are_tunelab_errors_with_exit_code_2():
    with pytest.raises(TunelabError) as info:
        load_config(overrides=["data.nope=1"])
    assert info.value.exit_code == 2
    assert info.value.where == "command line"


def test_config_to_dict_round_trips():
    cfg = load_config(overrides=["data.split.seed=3", "data.labels=[a,b]"])
    dumped = config_to_dict(cfg)
    assert dumped["data"]["split"]["seed"] == 3 and dumped["data"]["labels"] == ["a", "b"]
    assert RunConfig.model_validate(dumped) == cfg
