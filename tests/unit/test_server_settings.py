"""The server's settings as a user writes them in batchyard.toml: a misspelt name is named,
with the setting it was likely meant to be."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.errors import ConfigError
from batchyard.web.settings import ServerSettings


def test_a_misspelt_setting_in_the_toml_file_says_which_it_was_meant_to_be(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "batchyard.toml"
    toml.write_text("prot = 9000\n")
    with pytest.raises(ConfigError) as caught:
        ServerSettings.load(toml)
    assert str(caught.value) == (
        f"bad setting ({toml}, the environment or the flags): prot: not a setting; "
        "did you mean 'port'?"
    )
    toml.write_text("zzzzzz = 1\n")
    with pytest.raises(ConfigError) as caught:
        ServerSettings.load(toml)
    assert "zzzzzz: not a setting; the settings: db, host, port, " in str(caught.value)
