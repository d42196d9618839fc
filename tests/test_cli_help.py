"""scripts/train.py's --help (every field described, from the config dataclasses' comments) and its one
image size (data.image_size; model.image_size follows)."""
import dataclasses

import pytest

from gan_core import config as config_mod, kinds
from scripts.train import help_text, one_geometry


@pytest.mark.parametrize("kind", sorted(kinds.KINDS))
def test_help_describes_every_field(kind):
    text = help_text([f"model={kind}"])
    for group, cls in (("model", kinds.KINDS[kind].config), ("data", config_mod.DataConfig),
                       ("train", config_mod.TrainConfig)):
        described = config_mod.field_help(cls)
        for f in dataclasses.fields(cls):
            assert described.get(f.name), f"{group}.{f.name} has no description"
            assert f"{group}.{f.name}=" in text
    assert "follows data.image_size" in text
    assert "unknown model kind" in help_text(["model=nope"])


def test_field_help_reads_trailing_and_leading_comments():
    @dataclasses.dataclass
    class Example:
        a: int = 1  # the first
        # spans two
        # lines
        b: str = "x"
        # A heading over several fields:
        c: float = 0.5  # c's own
        d: int = 2

    assert config_mod.field_help(Example) == {"a": "the first", "b": "spans two lines", "c": "c's own"}


def test_one_image_size_model_follows_data():
    base = {"model": {"image_size": 64, "channels": 3}, "data": {"image_size": 64, "channels": 3}}
    cfg = one_geometry({"model": {"image_size": 32, "channels": 1}, "data": {"image_size": 64, "channels": 3}},
                       ["model.image_size=32", "model.channels=1"])
    assert cfg["data"] == {"image_size": 32, "channels": 1}  # a model.* size is taken as the data's
    assert one_geometry({k: dict(v) for k, v in base.items()}, ["data.image_size=64"])["data"]["image_size"] == 64
    with pytest.raises(ValueError, match="set data.image_size only"):
        one_geometry({"model": {"image_size": 32, "channels": 3}, "data": {"image_size": 64, "channels": 3}},
                     ["model.image_size=32", "data.image_size=64"])
