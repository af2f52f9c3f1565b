import pytest

from bossnas.config import RunConfig, list_presets, load_config, parse_number, read_preset
from bossnas.errors import BossNASError


def test_defaults_then_preset_then_overrides():
    c = load_config("quickstart", ["train.epochs=3", "search.max_flops=2.5M", "train.ensemble=false"])
    assert c.data.name == "digits" and c.data.image_size == 16
    assert c.train.epochs == 3 and c.train.ensemble is False
    assert c.search.max_flops == 2.5e6


def test_space_options_are_free_form():
    c = load_config(None, ["model.space_options.width_mult=0.25"])
    assert c.model.space_options == {"width_mult": 0.25}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch' \\(did you mean 'train.epochs'\\?\\)"),
        ("trian.epochs=3", "unknown config key 'trian.epochs'"),
        ("train.epochs=-1", "'train.epochs': -1 is out of range; expected an integer >= 1"),
        ("train.epochs=1.5", "cannot read '1.5' as int"),
        ("train.lr=fast", "cannot read 'fast' as float"),
        ("train.sampling=greedy", "expected fair or uniform"),
        ("train.ensemble=maybe", "cannot read 'maybe' as bool"),
        ("epochs", "not of the form key=value"),
        ("=3", "has no key"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(BossNASError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_presets_load_and_unknown_preset_errors(tmp_path):
    assert "quickstart" in list_presets()
    for name in list_presets():
        load_config(name)
    with pytest.raises(BossNASError, match="unknown preset 'quikstart' \\(did you mean 'quickstart'\\?\\)"):
        read_preset("quikstart")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(BossNASError, match="not valid YAML"):
        read_preset(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  epocs: 2\n")
    with pytest.raises(BossNASError, match="unknown config key 'train.epocs'"):
        load_config(str(typo))


def test_fingerprint_ignores_device_and_search_budget():
    a, b = RunConfig(), RunConfig()
    b.device, b.search.max_flops, b.data.workers = "cpu", 1e6, 4
    assert a.fingerprint() == b.fingerprint()
    b.train.lr = 0.1
    assert a.fingerprint() != b.fingerprint()


def test_parse_number_suffixes():
    assert parse_number("3.4G") == 3.4e9
    assert parse_number("500k") == 5e5
    assert parse_number("1e6") == 1e6


def test_item_14_integers_are_exact_and_written_as_integers():
    config = load_config(None, ["seed=123456789012345678", "data.train_images=1e3", "train.epochs=20.0"])
    assert config.seed == 123456789012345678 and config.data.train_images == 1000 and config.train.epochs == 20
    assert load_config(None, ["seed=9223372036854775807"]).seed == 2**63 - 1  # big ints exact
    for text, shown in [("1_0", "'1_0'"), ("2k", "'2k'"), ("١٠", "'١٠'"), ("1.5", "'1.5'"), ("0x10", "'0x10'"),
                        ("1e400", "'1e400'"), ("", "''")]:
        with pytest.raises(BossNASError) as info:
            load_config(None, [f"train.epochs={text}"])
        assert str(info.value) == f"config key 'train.epochs': cannot read {shown} as int"
    # float keys: no underscores or non-ASCII digits either
    for text in ("1_0", "٠.٥"):
        with pytest.raises(BossNASError, match="cannot read .* as float"):
            load_config(None, [f"train.lr={text}"])
